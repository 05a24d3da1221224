"""OOV dropout: in training mode some ids of the configured fields become their field's OOV row; eval is untouched."""
from __future__ import annotations

import torch

from pepnet.nn import FeatureEmbedding


def _emb(p: float) -> FeatureEmbedding:
    # two sparse fields: field 0 rows 0..9 (OOV row 0), field 1 rows 10..19 (OOV row 10); dropout on field 1 only
    return FeatureEmbedding(20, 0, 4, oov_dropout=[(1, 10, p)])


def test_training_replaces_ids_with_the_fields_oov_row_at_the_rate():
    torch.manual_seed(0)
    emb = _emb(0.3).train()
    sparse = torch.stack([torch.randint(1, 10, (20000,)), torch.randint(11, 20, (20000,))], 1)
    dropped = emb._drop_ids(sparse)
    assert torch.equal(dropped[:, 0], sparse[:, 0])                        # other fields never touched
    hit = dropped[:, 1] == 10
    assert torch.equal(dropped[~hit, 1], sparse[~hit, 1])                  # the rest keep their ids
    assert abs(hit.float().mean().item() - 0.3) < 0.02                      # at the configured rate
    assert torch.equal(sparse[:, 1] >= 11, torch.ones(20000, dtype=torch.bool))  # the input is not modified


def test_oov_row_gets_gradient_in_training_and_eval_is_deterministic():
    torch.manual_seed(0)
    emb = _emb(0.5)
    sparse = torch.tensor([[3, 15]] * 64)
    emb.train()
    emb(sparse, torch.zeros(64, 0)).sum().backward()
    grad = emb.table.weight.grad.to_dense()
    assert grad[10].abs().sum() > 0 and grad[15].abs().sum() > 0           # both the OOV row and the id learn
    emb.eval()
    out1, out2 = emb(sparse, torch.zeros(64, 0)), emb(sparse, torch.zeros(64, 0))
    assert torch.equal(out1, out2) and torch.equal(out1[:, 1], emb.table.weight[15].expand(64, 4))
