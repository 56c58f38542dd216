"""Model resolution and the Llama-family layer finder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from pipeline.errors import ModelLoadError
from pipeline.models import check_layer, decoder_layers, hidden_size, layer_count, load_model

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100}  # fmt: skip


@pytest.mark.parametrize(
    "config_cls",
    [transformers.LlamaConfig, transformers.MistralConfig, transformers.Qwen2Config, transformers.GemmaConfig],
)
def test_decoder_layers_found_for_llama_family(config_cls: type) -> None:
    extra = {"head_dim": 8} if config_cls is transformers.GemmaConfig else {}
    model = transformers.AutoModelForCausalLM.from_config(config_cls(**TINY, **extra))
    assert len(decoder_layers(model)) == 3
    assert hidden_size(model) == 32


def test_unsupported_architecture_is_a_clear_error() -> None:
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ModelLoadError, match="model type 'gpt2' is not supported"):
        decoder_layers(model)


def test_layer_out_of_range(tiny: object) -> None:
    with pytest.raises(ModelLoadError, match=r"layer 4 does not exist; tiny has layers 0\.\.3"):
        check_layer(tiny.model, 4, "tiny")  # type: ignore[attr-defined]


def test_tiny_random_is_deterministic_and_offline(tiny: object) -> None:
    again = load_model("tiny-random", device="cpu")
    for a, b in zip(tiny.model.parameters(), again.model.parameters(), strict=True):  # type: ignore[attr-defined]
        assert torch.equal(a, b)
    assert again.num_layers == 4 and again.hidden_size == 64
    tok = again.tokenizer
    text = "Hello, wörld!"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_layer_count_without_loading(tmp_path: Path) -> None:
    assert layer_count("tiny-random") == 4 and layer_count("smollm2-135m") == 30
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 32}))
    assert layer_count(str(tmp_path)) == 32
    assert layer_count("meta-llama/NotCached-1B") is None


def test_hub_failure_says_what_to_do() -> None:
    with pytest.raises(ModelLoadError, match="HF_TOKEN"):
        load_model("steertui-test/does-not-exist", device="cpu")


def test_missing_local_dir() -> None:
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load_model("./no/such/dir", device="cpu")


def test_smollm2_gguf_metadata_layer_count() -> None:
    from pipeline.models import _gguf_block_count, _smollm2_gguf

    assert _gguf_block_count(_smollm2_gguf()) == 30
