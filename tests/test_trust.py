"""Files from elsewhere run no code: a crafted model.pt, checkpoint.pt or model.pt2, each of which would create
a marker file if it were unpickled or executed, is refused and the marker does not exist afterwards. An export's
files are verified against the sha256 in its manifest; the Predictor refuses bad arguments clearly and warns
about domains never seen in training."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

import pepnet
from pepnet.cli import app
from pepnet.datasets.synthetic import SyntheticSpec, generate
from pepnet.errors import DataWarning
from pepnet.export import ExportError, Predictor
from pepnet.export.archive import load_program
from pepnet.export.serving import MANIFEST, file_digests
from pepnet.train.checkpoint import load_checkpoint, save_checkpoint
from pepnet.train.trainer import BEST, CHECKPOINT


class Payload:
    """Unpickling this object calls ``open(marker, "w")``: the marker file exists iff the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- checkpoints


def test_crafted_model_pt_is_refused_by_evaluate(tiny_export, tmp_path):
    run = _copy(tiny_export.run, tmp_path / "run")
    marker = tmp_path / "marker"
    save_checkpoint({"embedding.table.weight": Payload(marker)}, run / BEST)  # a valid digest header
    assert not marker.exists()
    res = CliRunner().invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: checkpoint") and "refused without running" in res.output
    assert "Traceback" not in res.output
    assert not marker.exists()


def test_crafted_checkpoint_is_refused_by_resume(tiny_export, tmp_path):
    run = _copy(tiny_export.run, tmp_path / "run")
    marker = tmp_path / "marker"
    ck = load_checkpoint(run / CHECKPOINT)
    ck["state"] = Payload(marker)
    save_checkpoint(ck, run / CHECKPOINT)
    res = CliRunner().invoke(app, ["fit", "--resume", "--out", str(run)])
    assert res.exit_code == 2, res.output
    assert "error: checkpoint" in res.output and "refused without running" in res.output
    assert not marker.exists()


def test_the_payload_runs_when_unpickled(tmp_path):
    """The payload is live: the marker test above would catch a loader that unpickles it."""
    marker = tmp_path / "marker"
    save_checkpoint({"x": Payload(marker)}, tmp_path / "c.pt")
    raw = (tmp_path / "c.pt").read_bytes()
    torch.load(io.BytesIO(raw[raw.index(b"\n") + 1:]), weights_only=False)  # past the digest header
    assert marker.exists()


def test_resume_is_exact_with_tensor_only_random_state(tmp_path):
    """The random states are kept as tensors and numbers: a checkpoint round-trips them exactly."""
    import random

    import numpy as np

    from pepnet.train.runtime import rng_state, set_rng_state

    state = rng_state()
    save_checkpoint(state, tmp_path / "rng.pt")
    before = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "rng.pt"))
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(before[0], after[0]) and (before[1] == after[1]).all() and before[2] == after[2]


# ----------------------------------------------------------------------------- exports


def _rewrite(archive: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> None:
    """Rewrite the zip ``archive`` with some entries replaced (by name) and others added."""
    with zipfile.ZipFile(archive) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    entries.update(replace)
    entries.update(add or {})
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def _reseal(export: Path) -> None:
    """What an attacker would do: make the manifest's digests match the altered files."""
    manifest = json.loads((export / MANIFEST).read_text())
    manifest["files"] = file_digests(export)
    (export / MANIFEST).write_text(json.dumps(manifest))


def _pickled(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_export_asking_for_pickled_weights_is_refused(tiny_export, tmp_path):
    export = _copy(tiny_export.export, tmp_path / "e")
    archive, marker = export / "model.pt2", tmp_path / "marker"
    with zipfile.ZipFile(archive) as zf:
        config_name = next(n for n in zf.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(zf.read(config_name))
    key = next(iter(config["config"]))
    config["config"][key]["use_pickle"] = True
    weight = config_name.rsplit("/", 1)[0] + "/" + config["config"][key]["path_name"]
    _rewrite(archive, {config_name: json.dumps(config).encode(), weight: _pickled(Payload(marker))})
    with pytest.raises(Exception):  # noqa: B017 - torch itself unpickles it (and then fails on the object)
        torch.export.load(archive)
    assert marker.exists(), "the crafted archive must be live for this test to mean anything"
    marker.unlink()
    _reseal(export)
    with pytest.raises(ExportError, match="asks for a pickled object"):
        Predictor(export)
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["data/aotinductor/model/model.so", "data/constants/custom_obj_0",
                                   "data/weights/model.pt"])
def test_export_with_code_or_legacy_pickles_is_refused(tiny_export, tmp_path, entry):
    export = _copy(tiny_export.export, tmp_path / "e")
    with zipfile.ZipFile(export / "model.pt2") as zf:
        root = zf.namelist()[0].split("/", 1)[0]
    _rewrite(export / "model.pt2", {}, {f"{root}/{entry}": b"\x7fELF or pickle"})
    _reseal(export)
    with pytest.raises(ExportError, match="unexpected entry"):
        Predictor(export)


def test_export_with_pickled_example_inputs_is_refused(tiny_export, tmp_path):
    export = _copy(tiny_export.export, tmp_path / "e")
    marker = tmp_path / "marker"
    with zipfile.ZipFile(export / "model.pt2") as zf:
        sample = next(n for n in zf.namelist() if "sample_inputs" in n)
    _rewrite(export / "model.pt2", {sample: _pickled((Payload(marker),))})
    with pytest.raises(ExportError, match="holds objects other than tensors"):
        load_program(export / "model.pt2")
    assert not marker.exists()


def test_damaged_export_file_is_named_at_load(tiny_export, tmp_path):
    export = _copy(tiny_export.export, tmp_path / "e")
    data = bytearray((export / "model.pt2").read_bytes())
    data[len(data) // 3] ^= 0xFF  # a bit flip inside the archive (weights or graph)
    (export / "model.pt2").write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"model\.pt2 is damaged or was replaced"):
        Predictor(export)
    vocab = next((export / "encoder").glob("vocab.*.parquet"))
    export2 = _copy(tiny_export.export, tmp_path / "e2")
    (export2 / "encoder" / vocab.name).write_bytes(vocab.read_bytes()[:-10])
    with pytest.raises(ExportError, match=vocab.name):
        Predictor(export2)


def test_truncated_model_pt2_is_a_clear_error(tiny_export, tmp_path):
    export = _copy(tiny_export.export, tmp_path / "e")
    data = (export / "model.pt2").read_bytes()
    (export / "model.pt2").write_bytes(data[: len(data) // 2])
    _reseal(export)  # even with matching digests the archive itself is named
    with pytest.raises(ExportError, match="not a readable torch.export archive"):
        Predictor(export)


def test_manifest_lists_every_export_file(tiny_export, tmp_path):
    d = tiny_export.export
    manifest = json.loads((d / MANIFEST).read_text())
    on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(manifest["files"]) == on_disk and "model.pt2" in on_disk
    assert all(len(v) == 64 for v in manifest["files"].values())
    export = _copy(d, tmp_path / "old")
    del manifest["files"]
    (export / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="lists no file digests"):
        Predictor(export)


def test_predictor_refuses_bad_arguments_clearly(tiny_export):
    rows = generate(SyntheticSpec(n_rows=50, n_users=300, n_items=500, seed=5)).drop(["click", "like"])
    pred = Predictor(tiny_export.export)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            pred.predict(rows, batch_size=bad)
    with pytest.raises(TypeError, match=r"LazyFrame \(call \.collect\(\) first\)"):
        pred.predict(rows.lazy())
    assert pred.predict(rows, batch_size=7).height == 50


def test_unseen_domains_warn_in_predictor_predict_and_evaluate(tiny_export, tmp_path):
    rows = generate(SyntheticSpec(n_rows=300, n_users=300, n_items=500, seed=5))
    rows = rows.with_columns(pl.when(pl.int_range(pl.len()) < 5).then(99).otherwise(pl.col("domain_id"))
                             .cast(rows.schema["domain_id"]).alias("domain_id"))
    with pytest.warns(DataWarning, match=r"domains never seen in training: \['99'\]"):
        Predictor(tiny_export.export).predict(rows.drop(["click", "like"]))
    path = tmp_path / "rows.parquet"
    rows.write_parquet(path)
    run = pepnet.Run.load(tiny_export.run)
    with pytest.warns(DataWarning, match=r"rows\.parquet has domains never seen in training: \['99'\]"):
        run.predict(str(path))
    with pytest.warns(DataWarning, match=r"domains never seen in training: \['99'\]"):
        run.evaluate(str(path))
    with pytest.warns(DataWarning, match=r"domains never seen in training: \['99'\]"):  # the CLI prints it
        res = CliRunner().invoke(app, ["predict", str(tiny_export.run), "--data", str(path),
                                       "--out", str(tmp_path / "p.pq")])
    assert res.exit_code == 0, res.output
    with _no_warning(DataWarning):
        Predictor(tiny_export.export).predict(rows.filter(pl.col("domain_id") != 99).drop(["click", "like"]))


class _no_warning:
    """Context manager: fail if a warning of ``category`` is raised inside."""

    def __init__(self, category: type[Warning]):
        self.category = category

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.seen = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not [w for w in self.seen if issubclass(w.category, self.category)]
