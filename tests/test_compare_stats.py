"""pepnet.compare.stats: intervals, paired differences and the small-test warning on synthetic predictions."""
from __future__ import annotations

import numpy as np

from pepnet.compare.render import paired_table
from pepnet.compare.results import aggregate
from pepnet.compare.stats import MAX_WIDTH, add_statistics
from pepnet.metrics import evaluate


def _case(n_users: int, rows_per_user: int = 5, seed: int = 0):
    """Two tasks; 'shared_bottom' (3 seeds) and 'pepnet' (3 seeds, more signal on task a; on task b the same
    scores up to a tiny noise)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rows_per_user)
    n = users.size
    labels = (rng.random((n, 2)) < 0.3).astype(float)
    labels[rng.random(n) < 0.1, 1] = np.nan
    base = labels.copy()
    base[np.isnan(base)] = 0
    noise = rng.normal(size=(n, 2))

    def seeds(gain_a: float) -> np.ndarray:
        out = []
        for k in range(3):
            s = noise + base * np.array([0.5 + gain_a, 0.5]) + rng.normal(scale=0.05, size=(n, 2)) * (k + 1)
            out.append(1 / (1 + np.exp(-s)))
        return np.stack(out)

    probs = {"shared_bottom": seeds(0.0), "pepnet": seeds(1.0)}
    probs["pepnet"][..., 1] = probs["shared_bottom"][..., 1] + rng.normal(scale=1e-3, size=(3, n))  # b: equal
    domain = (users % 2).astype(np.int64)

    result = {"tasks": ["a", "b"], "domains": ["d0", "d1"], "n_seeds": 3, "models": {}}
    for m, p in probs.items():
        runs = [{"report": evaluate(p[k], labels, domain, users, ["a", "b"], ["d0", "d1"]).to_dict()} for k in range(3)]
        result["models"][m] = {"aggregate": {"|".join(k): v for k, v in aggregate(runs).items()}}
    return result, probs, labels, domain, users


def test_a_real_gain_is_told_apart_and_an_equal_task_is_not():
    result, probs, labels, domain, users = _case(3000)
    warns = add_statistics(result, probs, labels, domain, users, n_boot=200)
    assert warns == []  # 15,000 rows: intervals narrower than MAX_WIDTH
    a = result["paired"]["models"]["pepnet"]["ALL|a|auc"]
    b = result["paired"]["models"]["pepnet"]["ALL|b|auc"]
    assert a["low"] > 0.05 and a["agreeing"] == 3 and a["seeds"] == 3
    assert b["low"] < 0 < b["high"]  # same signal on task b: no evidence of a difference
    assert result["paired"]["models"]["pepnet"]["d1|a|gauc"]["low"] > 0  # per domain, GAUC too
    ref = result["intervals"]["shared_bottom"]["ALL|a|auc"]
    assert ref["high"] - ref["low"] < MAX_WIDTH
    table = paired_table(result)
    assert "a seeds agreeing" in table and "| pepnet | +0." in table and "3 / 3" in table


def test_a_small_test_split_warns_per_task():
    """The issue's case: 300 test rows, where a gain looked like '+0.087, ahead on 3/3'."""
    result, probs, labels, domain, users = _case(60)
    warns = add_statistics(result, probs, labels, domain, users, n_boot=200)
    assert len(warns) == 2 and all("too small to tell models apart" in w for w in warns)
    assert "task 'a'" in warns[0] and "300 labelled rows" in warns[0]
    width = result["intervals"]["shared_bottom"]["ALL|a|auc"]
    assert width["high"] - width["low"] > MAX_WIDTH
