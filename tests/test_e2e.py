"""End to end: PEPNet learns the planted signal of the synthetic generator, and learns nothing where
there is none.

Both runs use the same data size, split, model and seed; only ``data.synthetic.signal`` differs
(1: labels depend on domain, user, item, author and dense features; 0: every label is an independent
coin with the same positive rate). Metric: validation AUC of task ``click`` (20 % positives).

Thresholds. For labels independent of the scores, the AUC (Mann-Whitney U / (n_pos n_neg)) has mean 0.5
and standard deviation sd = sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)); here n_pos ~ 900,
n_neg ~ 3600, so sd ~ 0.011. No model can exceed 0.5 + 5 sd on signal-free data except with
probability ~3e-7, so
  * the no-signal run must stay inside 0.5 +- 5 sd (it does, or the pipeline leaks labels into features);
  * the signal run must exceed both 0.5 + 8 sd (~0.59: impossible without learning the signal) and a
    fixed floor of 0.70 (the generator's oracle reaches 0.82 on this validation split; this tiny PEPNet
    after 2 epochs on 21k training rows measured 0.742, and 0.508 without signal, sd 0.011), so 0.70
    leaves room for platform noise but not for a model that misses most of the signal.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import pepnet
from pepnet.config import parse_config
from pepnet.prepare import prepare
from pepnet.run import score

N_ROWS = 30_000


def _valid_click_auc(tree: dict, out) -> tuple[float, int, int]:
    cfg = parse_config(tree)
    run = pepnet.fit(cfg, out=out, log=lambda _: None)
    valid = prepare(cfg, encoder=run.encoder, log=lambda _: None).encoded["valid"]
    report = score(run.model, valid, run.encoder, 8192, run.device)
    y = valid.labels[:, run.encoder.task_names.index("click")]
    n_pos, n_neg = int(np.nansum(y)), int(np.sum(y == 0))
    return report.get("click")["auc"], n_pos, n_neg


def _sd(n_pos: int, n_neg: int) -> float:
    return math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pepnet_learns_planted_signal_and_nothing_without_it(tiny_config_tree, tmp_path):
    results = {}
    for signal in (1.0, 0.0):
        tree = tiny_config_tree(epochs=2, n_rows=N_ROWS, n_users=300, n_items=500, n_authors=60, signal=signal)
        tree["model"]["hidden_units"] = [32, 16]
        tree["train"].update(batch_size=256, dense_lr=3e-3)
        results[signal] = _valid_click_auc(tree, tmp_path / f"signal{signal}")

    auc1, pos1, neg1 = results[1.0]
    auc0, pos0, neg0 = results[0.0]
    assert pos1 > 500 and pos0 > 500 and neg1 > 2000 and neg0 > 2000
    sd1, sd0 = _sd(pos1, neg1), _sd(pos0, neg0)
    assert auc1 > max(0.70, 0.5 + 8 * sd1), f"signal run: valid AUC {auc1:.4f} (sd under no signal {sd1:.4f})"
    assert abs(auc0 - 0.5) < 5 * sd0, f"no-signal run: valid AUC {auc0:.4f} outside 0.5 +- 5 sd ({sd0:.4f})"
