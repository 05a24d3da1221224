"""Published versions: numbering, the atomic `current` pointer, `pepnet export --publish`, `pepnet stream
--publish` after each period, and the verification batch that loading an export checks."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pepnet import cli
from pepnet.cli import app
from pepnet.datasets.synthetic import SyntheticSpec, write
from pepnet.export.publish import current_version, publish, published, version_dir
from pepnet.export.serving import ExportedModel, ExportError


def test_publish_numbers_versions_and_moves_current(tmp_path):
    assert current_version(tmp_path / "m") is None
    for n in (1, 2):
        assert publish(tmp_path / "m", lambda d, n=n: (d.mkdir(), (d / "x").write_text(str(n)))) == n
        assert current_version(tmp_path / "m") == n and (version_dir(tmp_path / "m", n) / "x").read_text() == str(n)

    def broken(folder: Path) -> None:
        folder.mkdir()
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        publish(tmp_path / "m", broken)
    assert published(tmp_path / "m") == [1, 2] and current_version(tmp_path / "m") == 2
    assert sorted(p.name for p in (tmp_path / "m" / "versions").iterdir()) == ["1", "2"]  # no staging folder left


def test_concurrent_publishers_leave_current_at_the_newest_version(tmp_path, monkeypatch):
    """Publisher A numbers its version 1, then is slow to switch ``current``; publisher B publishes version 2
    meanwhile. ``current`` must end at 2: without the lock, A's late switch moved it back to 1."""
    from pepnet.export import publish as pub

    models, b_done, real_write = tmp_path / "m", threading.Event(), pub.atomic_write

    def slow_switch_to_1(path, text):
        if text == "1\n":
            b_done.wait(1.0)  # A waits (at most 1 s) for B to finish; under the lock B cannot finish first
        real_write(path, text)

    monkeypatch.setattr(pub, "atomic_write", slow_switch_to_1)
    a = threading.Thread(target=publish, args=(models, lambda d: (d.mkdir(), (d / "x").write_text("a"))))
    a.start()
    while not version_dir(models, 1).exists():
        time.sleep(0.005)
    assert publish(models, lambda d: (d.mkdir(), (d / "x").write_text("b"))) == 2
    b_done.set()
    a.join()
    assert published(models) == [1, 2] and current_version(models) == 2


def test_export_publish_cli_and_verification(tiny_export, tmp_path):
    res = CliRunner().invoke(app, ["export", str(tiny_export.run), "--publish", str(tmp_path / "models")])
    assert res.exit_code == 0, res.output
    assert current_version(tmp_path / "models") == 1
    model = ExportedModel(version_dir(tmp_path / "models", 1), version="1")
    assert model.verify_diff <= 1e-5 and len(model.manifest["verification"]["logits"]) == 16
    res = CliRunner().invoke(app, ["export", str(tiny_export.run)])
    assert res.exit_code != 0 and "--out EXPORT_DIR or --publish MODELS_DIR" in res.output

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_export.export, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["verification"]["logits"][3][1] += 1e-3
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="verification batch"):
        ExportedModel(tampered)


def test_stream_publishes_after_each_period(tmp_path, tiny_config_file, monkeypatch):
    periods = write(SyntheticSpec(n_rows=1500, n_users=100, n_items=200, n_authors=20, n_dense=1, n_periods=2,
                                  seed=4), tmp_path / "periods", files="periods", progress=False)
    calls = []
    monkeypatch.setattr(cli, "_publish", lambda *args: calls.append(args))
    res = CliRunner().invoke(app, ["stream", str(tiny_config_file), "--data", str(tmp_path / "periods"),
                                   "--out", str(tmp_path / "run"), "--publish", str(tmp_path / "models"),
                                   "--format", "onnx", "--auxiliary"])
    assert res.exit_code == 0, res.output
    assert len(periods) == 2 and calls == [(tmp_path / "run", tmp_path / "models", ("torch", "onnx"), True)] * 2
    res = CliRunner().invoke(app, ["stream", str(tiny_config_file), "--data", str(tmp_path / "periods"),
                                   "--out", str(tmp_path / "run2"), "--auxiliary"])
    assert res.exit_code == 2 and "--auxiliary applies to what --publish exports" in res.output


def test_serve_refuses_a_folder_with_nothing_to_serve(tmp_path):
    (tmp_path / "models" / "versions").mkdir(parents=True)
    for folder, expected in ((tmp_path / "models", "no published version yet"), (tmp_path, "neither an export")):
        res = CliRunner().invoke(app, ["serve", str(folder)])
        assert res.exit_code == 2 and expected in res.output, res.output
