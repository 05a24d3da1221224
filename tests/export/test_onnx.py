"""The ONNX format of an export (``pepnet export --format onnx``) scored by ONNX Runtime: the same function as the
torch program and the eager model, chosen by ``backend="auto"``, and refused when damaged or pointing outside."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

import pepnet
from pepnet.cli import app
from pepnet.datasets.synthetic import SyntheticSpec, generate
from pepnet.export import ExportError, Predictor
from pepnet.export.onnxrt import ONNX_FILE, OnnxProgram
from pepnet.export.serving import MANIFEST, ExportedModel, _example_inputs, file_digests

TASKS = ["p_click", "p_like"]


@pytest.fixture(scope="module")
def onnx_export(tiny_export, tmp_path_factory):
    """The tiny run exported with ``--format onnx`` through the CLI."""
    out = tmp_path_factory.mktemp("onnx") / "export"
    res = CliRunner().invoke(app, ["export", str(tiny_export.run), "--out", str(out), "--format", "onnx"])
    assert res.exit_code == 0, res.output
    return out


def test_onnx_scores_match_torch_program_and_eager_model(tiny_export, onnx_export, tmp_path):
    manifest = json.loads((onnx_export / MANIFEST).read_text())
    assert manifest["formats"] == ["torch", "onnx"] and ONNX_FILE in manifest["files"]
    assert manifest["max_abs_diff_vs_eager_by_format"]["onnx"] <= 1e-5
    torch_model, onnx_model = ExportedModel(onnx_export, backend="torch"), ExportedModel(onnx_export)
    assert (torch_model.backend, onnx_model.backend) == ("torch", "onnx")  # auto picks ONNX Runtime
    for rows in (1, 7, 3000):  # a dynamic batch dimension
        sparse, dense = _example_inputs(torch_model.encoder, rows, seed=rows)
        got, want = onnx_model.forward(sparse, dense), torch_model.forward(sparse, dense)
        assert got.shape == (rows, 2)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)

    rows = generate(SyntheticSpec(n_rows=500, n_users=300, n_items=500, seed=9))
    rows.write_parquet(tmp_path / "rows.parquet")
    eager = pepnet.Run.load(tiny_export.run).predict(str(tmp_path / "rows.parquet")).select(TASKS).to_numpy()
    served = Predictor(onnx_export).predict(rows).select(TASKS).to_numpy()
    np.testing.assert_allclose(served, eager, atol=1e-6, rtol=0)
    assert len(np.unique(served[:, 0])) > 10  # real, varied scores


def test_backend_choice_and_errors(tiny_export, onnx_export, tmp_path):
    assert ExportedModel(tiny_export.export).backend == "torch"  # no model.onnx: auto is the torch program
    with pytest.raises(FileNotFoundError, match="--format onnx"):
        ExportedModel(tiny_export.export, backend="onnx")
    planted = tmp_path / "planted"  # a model.onnx dropped into an export whose manifest does not list it
    shutil.copytree(tiny_export.export, planted)
    shutil.copy(onnx_export / ONNX_FILE, planted / ONNX_FILE)
    assert ExportedModel(planted).backend == "torch"  # not verified by the manifest: never loaded
    with pytest.raises(FileNotFoundError, match="manifest lists none"):
        ExportedModel(planted, backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        ExportedModel(onnx_export, backend="tensorrt")
    res = CliRunner().invoke(app, ["export", str(tiny_export.run), "--out", "x", "--format", "tflite"])
    assert res.exit_code == 2 and "--format must be one of torch, onnx" in res.output
    res = CliRunner().invoke(app, ["serve", str(onnx_export), "--backend", "tensorrt"])
    assert res.exit_code == 2 and "--backend must be one of auto, torch, onnx" in res.output


def _rewritten(export, tmp_path, change) -> object:
    """A copy of ``export`` whose model.onnx was changed by ``change(model)`` and whose manifest digests were
    updated to match (so that only the ONNX check can refuse it)."""
    copy = tmp_path / "changed"
    shutil.copytree(export, copy)
    model = onnx.load(str(copy / ONNX_FILE))
    change(model, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"] = file_digests(copy)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


def test_weights_in_an_external_file_are_refused(onnx_export, tmp_path):
    def external(model, folder):
        onnx.save_model(model, str(folder / ONNX_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="weights.bin", size_threshold=0)

    copy = _rewritten(onnx_export, tmp_path, external)
    with pytest.raises(ExportError, match="external file"):
        ExportedModel(copy, backend="onnx")


def test_a_changed_onnx_model_fails_the_verification_batch(onnx_export, tmp_path):
    def perturb(model, folder):
        w = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the largest weight
        arr = onnx.numpy_helper.to_array(w).copy()
        arr += 0.5
        w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
        onnx.save_model(model, str(folder / ONNX_FILE))

    copy = _rewritten(onnx_export, tmp_path, perturb)
    assert ExportedModel(copy, backend="torch").backend == "torch"  # the program itself is untouched
    with pytest.raises(ExportError, match="verification batch"):
        ExportedModel(copy, backend="onnx")
    (copy / ONNX_FILE).write_bytes(b"not a protobuf")
    with pytest.raises(ExportError, match="damaged or was replaced"):
        ExportedModel(copy, backend="onnx")


def test_onnx_program_is_called_like_the_torch_program(onnx_export):
    program = OnnxProgram(onnx_export / ONNX_FILE, threads=1)
    sparse, dense = _example_inputs(ExportedModel(onnx_export, backend="torch").encoder, 4)
    out = program(sparse, dense)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (4, 2)
