"""Gate NU: delta = gamma * sigmoid(W2 relu(W1 x + b1) + b2), in [0, gamma], about 1 when fresh."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

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


@pytest.mark.parametrize("groups", [1, 3])
def test_const_columns_are_the_last_inputs_and_get_no_gradient(groups):
    """gate(x, const) is gate(cat([x, const])) with the same weights; W1's rows for const still learn, and
    the backward computes no gradient for const (pepnet's stop-gradient inputs: E in EPNet, O_ep in PPNet)."""
    torch.manual_seed(4)
    gate = GateNU(10, 3, hidden=5, groups=groups)
    x, const = torch.randn(7, 6, requires_grad=True), torch.randn(7, 4)
    full = torch.cat([x, const], dim=1).detach().requires_grad_(True)
    torch.testing.assert_close(gate(x, const), gate(full))
    for s, (a, b) in enumerate(zip(gate.parts(x, groups, const).values(), gate.parts(full, groups).values(),
                                   strict=True)):
        torch.testing.assert_close(a(), b(), msg=f"part {s}")
    gate(full).square().sum().backward()
    want = {name: p.grad.clone() for name, p in gate.named_parameters()}
    gate.zero_grad()
    out = gate(x, const)
    with FlopCounterMode(display=False) as split:
        out.square().sum().backward()
    for name, p in gate.named_parameters():
        torch.testing.assert_close(p.grad, want[name], msg=name)
    assert gate.w1.grad[:, 6:].abs().sum() > 0  # const's rows of W1 learn
    torch.testing.assert_close(x.grad, full.grad[:, :6])
    out = gate(full)
    with FlopCounterMode(display=False) as joined:
        out.square().sum().backward()
    # the joined input's backward also multiplies grad(h) [7, G*5] by W1's const rows [4, G*5]: 2*7*4*G*5 FLOPs
    assert joined.get_total_flops() - split.get_total_flops() == 2 * 7 * 4 * groups * 5


def test_parts_of_some_groups_compute_only_those_groups():
    """parts(..., only=[2, 0]) of a gate with one group per part gives those groups' outputs and computes no other
    group, first layer included (a model serving some of its tasks, TaskTowers.select_tasks)."""
    torch.manual_seed(5)
    gate = GateNU(10, 3, hidden=5, groups=3)
    x, const = torch.randn(7, 6), torch.randn(7, 4)
    with torch.no_grad():
        full = gate(x, const).view(7, 3, 3)

        def flops(only):
            with FlopCounterMode(display=False) as counter:
                parts = gate.parts(x, 3, const, only)
                outs = {s: part() for s, part in parts.items()}
            return counter.get_total_flops(), outs

        all_flops, _ = flops(None)
        some_flops, outs = flops([2, 0])
    assert list(outs) == [2, 0]
    for s, out in outs.items():
        torch.testing.assert_close(out, full[:, s])
    assert 3 * some_flops == 2 * all_flops  # two groups of three: two thirds of every GEMM
    split = GateNU(10, 6, hidden=5)  # the paper's split gate: one first layer for all parts
    with torch.no_grad():
        torch.testing.assert_close(split.parts(x, 3, const, [1])[1](), split(x, const).view(7, 3, 2)[:, 1])
