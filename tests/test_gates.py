"""pepnet.gate_analysis: a field named `domain` keeps the domain labels, the compact top-fields table, CJK
glyphs in PNGs."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from pepnet.data.encoder import EncodedData
from pepnet.gate_analysis import label_column, summarise_gates, top_fields
from pepnet.plotfonts import cjk_font, use_fonts


class FakeGated(torch.nn.Module):
    """A model whose EPNet gate of field j is j / 10 + domain code, and PPNet gate of task t is t + 0.5."""

    def __init__(self, n_fields: int, tasks: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.n_fields, self.tasks = n_fields, tasks

    def forward_with_gates(self, sparse, dense):
        b = sparse.shape[0]
        ep = torch.arange(self.n_fields).float() / 10 + sparse[:, :1].float()  # [B, Fg]
        pp = (torch.arange(self.tasks).float() + 0.5).expand(b, -1)
        return torch.zeros(b, self.tasks), {"epnet": ep[..., None].expand(-1, -1, 4), "ppnet.0": pp[..., None]}


def _data(n_dom: int = 2) -> EncodedData:
    dom = np.repeat(np.arange(n_dom), 5)
    return EncodedData(sparse=dom[:, None].astype(np.int64), dense=np.zeros((dom.size, 0), np.float32),
                       labels=np.zeros((dom.size, 1), np.float32), domain=dom, user=np.arange(dom.size),
                       domain_names=["书籍", "电影"][:n_dom])


def test_a_field_named_domain_keeps_the_domain_labels(tmp_path):
    fields = ["user_id", "domain", "item_id"]
    summary = summarise_gates(FakeGated(3, 1), _data(), fields, ["domain"])
    ep = summary.epnet
    assert ep.columns == ["domain_label", *fields]
    assert ep["domain_label"].to_list() == ["书籍", "电影"]
    assert ep["domain"].to_list() == pytest.approx([0.1, 1.1])  # the field's gate column is kept
    assert summary.ppnet.columns == ["domain_label", "layer", "domain"]  # a task named domain, too
    summary.write(tmp_path)
    assert pl.read_csv(tmp_path / "gates_epnet.csv")["domain_label"].to_list() == ["书籍", "电影"]
    assert label_column(["a"]) == "domain" and label_column(["domain", "domain_label"]) == "domain_label_"


def test_top_fields_is_compact_with_many_fields():
    fields = [f"f{i}" for i in range(20)]
    ep = summarise_gates(FakeGated(20, 1), _data(), fields, ["t"]).epnet
    text = top_fields(ep, k=3)
    lines = text.splitlines()
    assert len(lines) == 3 and "3 of 20 fields" in lines[0]
    # domain 0: gates j/10, f0 is the farthest from 1; domain 1: gates 1 + j/10, f19 then f18, f17
    assert lines[1].split()[:3] == ["书籍", "f0", "0.00"]
    assert lines[2].split() == ["电影", "f19", "2.90", "f18", "2.80", "f17", "2.70"]
    assert max(map(len, lines[1:])) < 80


def test_cjk_domain_names_render_as_glyphs(tmp_path, monkeypatch):
    """With a CJK font installed, matplotlib finds a glyph for every character (no 'missing glyph' warning);
    without one, the plot still renders."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    font = use_fonts()
    summary = summarise_gates(FakeGated(3, 1), _data(), ["a", "b", "c"], ["t"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = summary.plot(tmp_path / "gates.png")
    assert path.stat().st_size > 1000
    missing = [w for w in caught if "missing from font" in str(w.message)]
    if font is None:
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-noto-cjk)")
    assert font == cjk_font() and missing == []
    import pepnet.plotfonts

    monkeypatch.setattr(pepnet.plotfonts, "cjk_font", lambda: None)  # without the font: boxes, and a warning
    use_fonts()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary.plot(tmp_path / "boxes.png")
    assert any("missing from font" in str(w.message) for w in caught)
    monkeypatch.undo()
    use_fonts()
