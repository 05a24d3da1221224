"""Gate NU: delta = gamma * sigmoid(W2 relu(W1 x + b1) + b2), in [0, gamma], about 1 when fresh."""
from __future__ import annotations

import pytest
import torch

from pepnet.nn import GateNU


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_output_in_zero_gamma_even_for_extreme_inputs(groups, gamma):
    torch.manual_seed(0)
    gate = GateNU(12, 5, hidden=7, gamma=gamma, groups=groups)
    x = torch.randn(256, 12) * 1e3  # saturates the sigmoid at both ends
    out = gate(x)
    assert out.shape == (256, groups * 5)
    assert out.min() >= 0.0 and out.max() <= gamma
    # both ends are actually reached, so the bounds above are not trivially loose
    assert out.min() < 0.01 * gamma and out.max() > 0.99 * gamma


@pytest.mark.parametrize("groups", [1, 4])
def test_fresh_gate_averages_close_to_one(groups):
    torch.manual_seed(1)
    gate = GateNU(64, 32, hidden=64, gamma=2.0, groups=groups)
    out = gate(torch.randn(2048, 64))
    assert abs(out.mean().item() - 1.0) < 0.05
    # no single output unit starts far from neutral either
    assert (out.mean(0) - 1.0).abs().max() < 0.35


def test_matches_the_formula_for_every_group():
    torch.manual_seed(2)
    gate = GateNU(6, 3, hidden=4, gamma=2.0, groups=2)
    x = torch.randn(5, 6)
    out = gate(x).view(5, 2, 3)
    for g in range(2):
        h = torch.relu(x @ gate.w1[g] + gate.b1[g])
        expected = 2.0 * torch.sigmoid(h @ gate.w2[g] + gate.b2[g])
        torch.testing.assert_close(out[:, g], expected)


def test_groups_are_independent_gates():
    torch.manual_seed(3)
    gate = GateNU(6, 3, hidden=4, groups=2)
    gate(torch.randn(8, 6)).view(8, 2, 3)[:, 0].sum().backward()
    for p in (gate.w1, gate.b1, gate.w2, gate.b2):
        assert p.grad[0].abs().sum() > 0
        assert torch.all(p.grad[1] == 0)
