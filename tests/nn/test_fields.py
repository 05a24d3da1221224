"""FieldSelect takes the same fields, with the same gradients, as index_select."""
from __future__ import annotations

import pytest
import torch

from pepnet.nn.fields import FieldSelect


@pytest.mark.parametrize("fields,runs", [
    ([1, 2, 4, 5, 6, 3], [(1, 3), (4, 7), (3, 4)]),  # runs of consecutive fields, out of order
    ([0], [(0, 1)]),
    ([5, 4, 4], [(5, 6), (4, 5), (4, 5)]),          # descending and repeated fields
    ([], []),                                       # an empty group (no prior features)
])
def test_same_fields_and_gradient_as_index_select(fields, runs):
    torch.manual_seed(0)
    emb = torch.randn(3, 7, 2, requires_grad=True)
    select = FieldSelect(fields)
    assert select.runs == runs
    ours = select(emb)
    ref = emb.index_select(1, torch.tensor(fields, dtype=torch.long))
    assert ours.shape == ref.shape == (3, len(fields), 2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    weight = torch.randn(ref.shape)
    (grad_ours,) = torch.autograd.grad((ours * weight).sum(), emb, allow_unused=True, materialize_grads=True)
    (grad_ref,) = torch.autograd.grad((ref * weight).sum(), emb, allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=0, atol=0)
