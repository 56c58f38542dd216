"""steertui: the manager, CLI and Textual TUI for BiPO steering-vector studies.

Starts fast: nothing here imports torch, transformers or textual at import time.
"""

__version__ = "0.1.0"
