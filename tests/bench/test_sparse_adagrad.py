"""RowWiseAdagrad makes exactly torch.optim.Adagrad's updates (sparse and dense gradients) and keeps its state
format."""
from __future__ import annotations

import pytest
import torch

from pepnet.train.sparse_adagrad import RowWiseAdagrad


@pytest.mark.parametrize("route", ["rows", "whole table"])
def test_same_updates_as_torch_adagrad_with_repeated_rows(route, monkeypatch):
    torch.manual_seed(0)
    ref_emb = torch.nn.Embedding(50, 4, sparse=True)
    ours_emb = torch.nn.Embedding(50, 4, sparse=True)
    ours_emb.load_state_dict(ref_emb.state_dict())
    ref_vec, ours_vec = torch.nn.Parameter(torch.randn(3, 4)), None
    ours_vec = torch.nn.Parameter(ref_vec.detach().clone())
    ref = torch.optim.Adagrad([ref_emb.weight, ref_vec], 0.3, lr_decay=0.01)
    ours = RowWiseAdagrad([ours_emb.weight, ours_vec], 0.3, lr_decay=0.01)  # torch's signature, lr positional
    ours.whole_table_ratio = 0 if route == "rows" else 10**9       # 50 rows, 40 gradient rows a step
    called = []
    for name in ("_rows_update", "_dense_update"):
        original = getattr(RowWiseAdagrad, name)
        monkeypatch.setattr(RowWiseAdagrad, name, staticmethod(
            lambda *a, _f=original, _n=name, **k: (called.append(_n), _f(*a, **k))[1]))
    for step in range(4):
        ids = torch.randint(0, 12, (40,))          # many repeats of few rows
        for emb, vec, opt in ((ref_emb, ref_vec, ref), (ours_emb, ours_vec, ours)):
            opt.zero_grad()
            ((emb(ids) * torch.arange(4.0)).sum() + (vec ** 2).sum() * (step + 1)).backward()
            opt.step()
        torch.testing.assert_close(ours_emb.weight, ref_emb.weight, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours_vec, ref_vec, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ref_emb.weight[20:], ref_emb.weight[20:] * 0)  # untouched rows keep their values
    state = ours.state_dict()["state"][0]
    torch.testing.assert_close(state["sum"], ref.state_dict()["state"][0]["sum"])
    assert float(state["step"]) == 4.0
    ref2 = torch.optim.Adagrad([ours_emb.weight, ours_vec], lr=0.3)
    ref2.load_state_dict(ours.state_dict())       # interchangeable checkpoints
    # the table took the route asked for (the dense vector always takes the dense update)
    assert called.count("_rows_update") == (4 if route == "rows" else 0)
    assert called.count("_dense_update") == (4 if route == "rows" else 8)
