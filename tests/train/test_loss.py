"""Masked multi-task BCE: sum over tasks of the mean BCE over the rows that carry that task's label."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pepnet.train.loss import masked_bce

NAN = float("nan")


def _bce(logit: float, y: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_per_task_mean_over_labelled_rows_by_hand():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 1.5]])
    labels = torch.tensor([[1.0, NAN], [0.0, 1.0], [NAN, NAN]])
    total, per_task = masked_bce(logits, labels)
    t0 = (_bce(0.5, 1) + _bce(2.0, 0)) / 2   # rows 0 and 1
    t1 = _bce(0.3, 1)                        # row 1 only
    torch.testing.assert_close(per_task, torch.tensor([t0, t1]))
    torch.testing.assert_close(total, torch.tensor(t0 + t1))


def test_fully_labelled_equals_plain_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 3, generator=g)
    labels = torch.randint(0, 2, (50, 3), generator=g).float()
    total, per_task = masked_bce(logits, labels)
    torch.testing.assert_close(per_task, F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0))
    torch.testing.assert_close(total, per_task.sum())


def test_missing_labels_contribute_no_loss_and_no_gradient():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (40, 2), generator=g).float()
    missing = torch.rand(40, 2, generator=g) < 0.4
    labels[missing] = NAN
    base = torch.randn(40, 2, generator=g)
    other = torch.where(missing, base + 100 * torch.randn(40, 2, generator=g), base)  # only missing logits change

    results = []
    for lg in (base, other):
        lg = lg.clone().requires_grad_(True)
        total, per_task = masked_bce(lg, labels)
        total.backward()
        results.append((total.detach(), per_task.detach(), lg.grad))
    (t_a, p_a, g_a), (t_b, p_b, g_b) = results
    assert torch.isfinite(t_a)
    torch.testing.assert_close(t_a, t_b, rtol=0, atol=0)
    torch.testing.assert_close(p_a, p_b, rtol=0, atol=0)
    torch.testing.assert_close(g_a, g_b, rtol=0, atol=0)
    assert torch.all(g_a[missing] == 0)
    assert torch.all(g_a[~missing] != 0)


def test_gradient_is_mean_over_labelled_rows():
    """d per_task[t] / d logit[i, t] = (sigmoid(logit) - y) / n_t, n_t = rows labelled for task t."""
    logits = torch.tensor([[0.2, 0.0], [-0.4, 0.0], [1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0], [0.0, NAN], [NAN, NAN], [1.0, NAN]])
    masked_bce(logits, labels)[0].backward()
    expected = torch.zeros(4, 2)
    for i in (0, 1, 3):
        expected[i, 0] = (torch.sigmoid(logits[i, 0]) - labels[i, 0]) / 3
    expected[0, 1] = (torch.sigmoid(logits[0, 1]) - 0.0) / 1
    torch.testing.assert_close(logits.grad, expected)


def test_task_without_labels_in_the_batch_gives_zero_not_nan():
    logits = torch.randn(5, 2, requires_grad=True)
    labels = torch.tensor([[1.0, NAN]] * 5)
    total, per_task = masked_bce(logits, labels)
    assert per_task[1].item() == 0.0 and torch.isfinite(total)
    total.backward()
    assert torch.all(logits.grad[:, 1] == 0)


def test_task_weights_scale_each_task():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 3, generator=g)
    labels = torch.randint(0, 2, (30, 3), generator=g).float()
    labels[:7, 2] = NAN
    weights = torch.tensor([1.0, 0.0, 2.5])
    total, per_task = masked_bce(logits, labels, weights)
    _, unweighted = masked_bce(logits, labels)
    torch.testing.assert_close(per_task, unweighted)  # per-task values are reported unweighted
    torch.testing.assert_close(total, per_task[0] + 2.5 * per_task[2])
