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
