"""FastDropout drops about p of the elements, keeps the expectation, is seeded and is off in evaluation."""
from __future__ import annotations

import pytest
import torch

from pepnet.nn.dropout import FastDropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_expectation_and_gradient(p):
    d = FastDropout(p)
    torch.manual_seed(0)
    x = torch.ones(64, 1000, requires_grad=True)
    y = d(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02                  # inverted dropout: expectation unchanged
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(d.scale)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())             # gradient flows through kept elements only


def test_seeded_and_identity_in_eval_or_at_zero():
    d = FastDropout(0.2)
    x = torch.randn(7, 33)                                     # odd size: not a multiple of four draws
    torch.manual_seed(3)
    a = d(x)
    torch.manual_seed(3)
    assert torch.equal(a, d(x)) and not torch.equal(a, x)
    d.eval()
    assert d(x) is x
    assert FastDropout(0.0)(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.0)
