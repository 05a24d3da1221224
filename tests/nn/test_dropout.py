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


def test_like_sets_only_where_the_draw_is_made():
    """``like`` (the pre-activation, in TaskTowers) is handed to the draw in place of x: the same seed gives the same
    mask whatever like's values, and the gradient still reaches x only."""
    d = FastDropout(0.3)
    x = torch.randn(9, 41, requires_grad=True)
    torch.manual_seed(5)
    plain = d(x)
    torch.manual_seed(5)
    with_like = d(x, torch.full((9, 41), float("nan")))       # like's values are never read
    torch.testing.assert_close(with_like, plain, equal_nan=False)
    with_like.sum().backward()
    torch.testing.assert_close(x.grad, (plain != 0).float() * d.scale)


def test_towers_draw_for_the_pre_activation():
    """TaskTowers hands z to the draw, so a compiled graph need not write relu(z) out just to size the draw: in the
    traced graph every random draw reads a GEMM output (addmm), none a ReLU; and the compiled towers match eager
    under the same seed."""
    from pepnet.nn.towers import TaskTowers

    towers = TaskTowers(12, [16, 8], n_tasks=2, dropout=0.25)
    x = torch.randn(32, 12)
    graphs = []

    def capture(gm, _inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.manual_seed(1)
    compiled = torch.compile(towers, backend=capture)(x)
    torch.manual_seed(1)
    torch.testing.assert_close(compiled, towers(x))
    sources = []
    for node in graphs[0].graph.nodes:
        if node.op == "call_function" and "uniform_int16" in str(node.target):
            src = node.args[0]
            while "detach" in str(src.target):
                src = src.args[0]
            sources.append(src)
    assert len(sources) == 4                                   # 2 tasks x 2 hidden layers
    assert all("addmm" in str(s.target) or "split" in str(s.target) or "getitem" in str(s.target)
               for s in sources), [str(s.target) for s in sources]
    assert not any("relu" in str(s.target) for s in sources)
