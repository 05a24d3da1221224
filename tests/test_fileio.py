"""atomic_write: the target holds the old or the new complete content, never a partial one, and no
temporary file is left behind."""
from __future__ import annotations

import pytest

from pepnet.fileio import atomic_write


def test_writes_and_replaces_text_and_bytes(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write(path, '{"auc": ', "0.7}")
    assert path.read_text() == '{"auc": 0.7}'
    atomic_write(path, b"new", memoryview(b" bytes"))
    assert path.read_bytes() == b"new bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failure_mid_write_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "run.json"
    atomic_write(path, "old complete content")
    with pytest.raises(TypeError):
        atomic_write(path, "first half of the new content, then", 12345)  # not writable: fails after a chunk
    assert path.read_text() == "old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # the temporary file was removed


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("outside the run")
    (tmp_path / "run").mkdir()
    link = tmp_path / "run" / "history.csv"
    link.symlink_to(victim)
    atomic_write(link, "epoch,train_loss\n")
    assert victim.read_text() == "outside the run"
    assert not link.is_symlink() and link.read_text() == "epoch,train_loss\n"


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path):
    import os

    victim = tmp_path / "victim.txt"
    victim.write_text("outside the run")
    target = tmp_path / "config.yaml"
    (tmp_path / f".config.yaml.tmp{os.getpid()}").symlink_to(victim)
    atomic_write(target, "name: x\n")
    assert victim.read_text() == "outside the run" and target.read_text() == "name: x\n"


def test_remove_orphans_deletes_leftovers_of_dead_writers_only(tmp_path):
    import os

    from pepnet.fileio import remove_orphans

    (tmp_path / "encoder").mkdir()
    dead = [tmp_path / ".checkpoint.pt.tmp99999999", tmp_path / "encoder" / ".encoder.json.tmp99999998"]
    alive = tmp_path / f".model.pt.tmp{os.getppid()}"  # a running writer's file is left alone
    other = tmp_path / ".notes.tmp"  # not a pepnet temporary name
    for p in [*dead, alive, other]:
        p.write_bytes(b"x" * 10)
    assert sorted(remove_orphans(tmp_path)) == sorted(dead)
    assert alive.exists() and other.exists() and not any(p.exists() for p in dead)
