"""Vector files: atomic save with sidecar, safe load, the study import, llama.cpp export."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from pipeline.errors import VectorError
from pipeline.timestamps import normalise_timestamp
from pipeline.vector_io import export_gguf
from pipeline.vectors import VectorMeta, is_complete, load_vector, save_vector, vector_info
from tests.conftest import run_cli


def _meta(vec: torch.Tensor, layer: int = 3) -> VectorMeta:
    return VectorMeta(model="tiny-random", layer=layer, epoch=2, hidden_size=vec.numel(), norm=float(vec.norm()))


def test_save_load_roundtrip_with_sidecar(tmp_path: Path) -> None:
    vec = torch.randn(64)
    path = tmp_path / "vec_ep2_layer3.pt"
    save_vector(path, vec, _meta(vec))
    assert torch.equal(load_vector(path, hidden_size=64), vec)
    assert torch.load(path, weights_only=True).dtype == torch.float32  # the study's layout: a bare tensor
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["hidden_size"] == 64 and side["layer"] == 3 and side["hook_site"] == "decoder_layer_output"
    assert is_complete(path)


def test_tensor_without_sidecar_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "vec_ep1_layer3.pt"
    torch.save(torch.ones(8), path)
    assert not is_complete(path)


def test_wrong_hidden_size_is_refused(tmp_path: Path) -> None:
    vec = torch.randn(64)
    path = tmp_path / "vec_ep2_layer3.pt"
    save_vector(path, vec, _meta(vec))
    with pytest.raises(VectorError, match="does not match the model's hidden size 576"):
        load_vector(path, hidden_size=576)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_pickled_code_is_never_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "vec_ep1_layer1.pt"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(VectorError, match="cannot load as a tensor"):
        load_vector(path)
    assert "pwned" not in capsys.readouterr().out


def test_timestamp_formats() -> None:
    assert normalise_timestamp(1740879839407) == ("2025-03-02T01:43:59.407+00:00", "exact")
    assert normalise_timestamp(1740831)[1] == "1000s"
    assert normalise_timestamp("2025-03-06T00:04:12.5")[0] == "2025-03-06T00:04:12.500000"
    assert normalise_timestamp(1740879839)[1] == "exact"
    assert normalise_timestamp("nonsense") == (None, "unknown")


def test_import_the_study_vectors(shared: Path, tmp_path: Path) -> None:
    src = shared / "seed-outputs/vector/relationship-seeking_Llama-3.1-8B-Instruct"
    (tmp_path / "steertui.toml").write_text('behavior = "relationship-seeking"\n')
    code, out, err = run_cli("vector", "import", str(src), "--workspace", str(tmp_path))
    assert code == 0, err
    assert "imported 140 vector(s)" in out and "hidden size 4096" in out
    run = tmp_path / "vector/relationship-seeking_Llama-3.1-8B-Instruct"
    files = sorted(run.glob("layer*/vec_ep*_layer*.pt"))
    assert len(files) == 140 and all(is_complete(f) for f in files)
    info = vector_info(run / "layer14/vec_ep20_layer14.pt")
    original = torch.load(src / "layer14/vec_ep20_layer14_gpu3.pt", weights_only=True)
    assert info["hidden_size"] == 4096 and info["epoch"] == 20 and info["layer"] == 14
    assert info["norm"] == pytest.approx(float(original.norm()), rel=1e-6)
    metrics = [json.loads(x) for x in (run / "layer13/evaluation_metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 40 and all(m["timestamp"].startswith("2025-03-") for m in metrics)
    assert {m["timestamp_precision"] for m in metrics} == {"exact", "1000s"}
    code, out, _ = run_cli("vector", "info", str(run / "layer14/vec_ep20_layer14.pt"))
    assert code == 0 and "hidden_size  4096" in out and "norm         3.3139" in out
    code, out, _ = run_cli("vector", "import", str(src), "--workspace", str(tmp_path))
    assert "imported 0 vector(s), 140 already present" in out


def test_import_rejects_a_directory_without_vectors(tmp_path: Path) -> None:
    (tmp_path / "steertui.toml").write_text("")
    code, _, err = run_cli("vector", "import", str(tmp_path), "--workspace", str(tmp_path))
    assert code == 2 and "no vec_ep<E>_layer<L>" in err


def test_gguf_export_is_a_llama_cpp_control_vector(tmp_path: Path) -> None:
    import gguf

    vec = torch.randn(64)
    path = tmp_path / "vec_ep2_layer3.pt"
    save_vector(path, vec, _meta(vec))
    out = export_gguf(path, tmp_path / "cv.gguf", scale=2.0)
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.layer_count"].contents() == 1
    (tensor,) = reader.tensors
    assert tensor.name == "direction.3"
    assert torch.allclose(torch.from_numpy(tensor.data.copy()), 2.0 * vec)
    save_vector(tmp_path / "vec_ep2_layer0.pt", vec, _meta(vec, layer=0))
    with pytest.raises(VectorError, match="needs layer >= 1"):
        export_gguf(tmp_path / "vec_ep2_layer0.pt", tmp_path / "x.gguf")
