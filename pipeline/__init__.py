"""steertui's stage workers: BiPO training, steered generation, judging, analysis.

Import-light on purpose: nothing here imports torch, transformers or textual at package import.
Heavy modules (`pipeline.train`, `pipeline.generate`, ...) import torch themselves.
"""
