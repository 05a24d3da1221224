"""`pepnet seesaw`: the paired-difference arithmetic on a hand-made case, the models it compares, and the command
end to end on a few thousand synthetic rows."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pepnet import seesaw as ss
from pepnet.cli import app
from pepnet.config import parse_config

TREE = {
    "name": "tiny",
    "data": {"dataset": "synthetic", "synthetic": {
        "n_rows": 3000, "n_users": 150, "n_items": 300, "n_authors": 30, "n_domains": 3,
        "domain_shares": [0.6, 0.3, 0.1], "tasks": ["click", "like"], "task_rates": [0.3, 0.1], "n_dense": 3,
        "domain_flip": 1.0, "task_flip": 0.8,
        "prior_gate": 0.5, "seed": 0}},
    "schema": {
        "domain": "domain_id", "user": "user_id", "time": "time", "labels": {"click": "click", "like": "like"},
        "features": [{"name": "user_id"}, {"name": "item_id"}, {"name": "domain_id"}, {"name": "d0", "kind": "dense"},
                     {"name": "d1", "kind": "dense"}, {"name": "d2", "kind": "dense"}],
        "stats": [{"name": "user_click", "keys": ["user_id"], "stat": "rate", "target": "click"},
                  {"name": "dom_like", "keys": ["domain_id"], "stat": "rate", "target": "like"},
                  {"name": "ud_n", "keys": ["user_id", "domain_id"], "stat": "count"}],
        "groups": {"general": ["user_id", "item_id", "domain_id", "d0", "d1", "d2", "ud_n"],
                   "domain_side": ["domain_id", "dom_like"], "user_prior": ["user_id", "user_click"],
                   "item_prior": ["item_id"]},
    },
    "model": {"embedding_dim": 4, "hidden_units": [8, 4], "gate_hidden": 4},
    "train": {"epochs": 1, "batch_size": 512, "progress": False, "patience": 0, "threads": 1},
}


def _report(cells: dict[tuple[str, str], tuple[float, float]]) -> dict:
    """A report dict (MetricsReport.to_dict layout) with the given (auc, gauc) per (domain, task)."""
    tasks = sorted({t for _, t in cells})
    domains = sorted({d for d, _ in cells if d != "ALL"})
    return {"tasks": tasks, "domains": domains,
            "overall": {t: {"auc": cells[("ALL", t)][0], "gauc": cells[("ALL", t)][1]} for t in tasks},
            "per_domain": [{"domain": d, "task": t, "auc": a, "gauc": g}
                           for (d, t), (a, g) in cells.items() if d != "ALL"]}


def test_paired_difference_arithmetic():
    d = ss.paired([0.70, 0.72, 0.74], [0.68, 0.69, 0.70])  # differences 0.02, 0.03, 0.04
    assert d["mean"] == pytest.approx(0.03) and d["std"] == pytest.approx(0.01)
    assert d["n"] == 3 and d["agree"] == 3 and d["clear"]  # 0.03 > 2 * 0.01 / sqrt(3) = 0.0115
    noisy = ss.paired([0.70, 0.66, 0.71], [0.68, 0.69, 0.70])  # +0.02, -0.03, +0.01
    assert noisy["mean"] == pytest.approx(0.0) and noisy["agree"] == 0 and not noisy["clear"]
    wide = ss.paired([0.70, 0.75], [0.69, 0.70])  # +0.01, +0.05: same sign, but 0.03 < 2 * 0.0283 / sqrt(2) = 0.04
    assert wide["agree"] == 2 and not wide["clear"]
    one = ss.paired([0.8], [0.7])
    assert one["std"] == 0.0 and one["agree"] == 1 and not one["clear"]  # one seed never clears the noise
    gap = ss.paired([0.8, math.nan, 0.7], [0.7, 0.7, 0.75])  # the NaN pair is left out
    assert gap["n"] == 2 and gap["values"] == pytest.approx([0.1, -0.05])


def test_table_and_verdicts_on_a_hand_made_case():
    """Two seeds, two domains, one task. Domain a: joint below alone on both seeds (a seesaw), PEPNet above alone;
    domain b: too few test labels. Task seesaw on ALL: joint above single-task on both seeds."""
    def runs(per_seed):
        return [{"report": _report({("ALL", "y"): (all_, all_), ("a", "y"): (a, a), ("b", "y"): (b, b)})}
                for all_, a, b in per_seed]

    arms = {
        "joint": runs([(0.70, 0.60, 0.50), (0.71, 0.62, 0.55)]),
        "pepnet": runs([(0.72, 0.66, 0.52), (0.73, 0.67, 0.53)]),
        "single:y": runs([(0.68, 0.61, 0.50), (0.69, 0.61, 0.50)]),
        "alone": {"a": [{"report": _report({("ALL", "y"): (0.64, 0.64), ("a", "y"): (0.64, 0.64)})},
                        {"report": _report({("ALL", "y"): (0.65, 0.65), ("a", "y"): (0.65, 0.65)})}]},
    }
    counts = {("ALL", "y"): (500, 900), ("a", "y"): (300, 400), ("b", "y"): (200, 30)}
    cells = ss.seesaw_table(arms, ["y"], ["a", "b"], counts, min_class=100)
    by = {(c["domain"], c["task"]): c for c in cells}
    assert [(c["domain"], c["small"]) for c in cells] == [("ALL", False), ("a", False), ("b", True)]
    a = by[("a", "y")]["diff"]
    assert a["joint - alone"]["auc"]["values"] == pytest.approx([-0.04, -0.03])
    assert a["joint - alone"]["auc"]["mean"] == pytest.approx(-0.035)
    assert a["joint - alone"]["auc"]["agree"] == 2 and a["joint - alone"]["auc"]["clear"]
    assert a["pepnet - alone"]["gauc"]["mean"] == pytest.approx(0.02)
    assert a["joint - single"]["auc"]["values"] == pytest.approx([-0.01, 0.01])
    assert not a["joint - single"]["auc"]["clear"]
    assert "joint - alone" not in by[("ALL", "y")]["diff"]  # no alone model covers every domain
    assert "joint - alone" not in by[("b", "y")]["diff"]  # b got no alone model
    assert by[("ALL", "y")]["diff"]["joint - single"]["gauc"]["values"] == pytest.approx([0.02, 0.02])

    line = ss.verdict(by[("a", "y")], "auc")
    assert line.startswith("a / y: joint training of the domains hurts (AUC -0.0350")
    assert "PEPNet not below alone beyond seed noise (AUC +0.0200" in line
    assert "training the tasks together: no difference beyond seed noise" in line
    assert ss.verdict(by[("b", "y")], "auc", 100).startswith("b / y: not judged (test rows hold 200 positive and 30 "
                                                             "negative labels")
    assert "training the tasks together helps (AUC +0.0200" in ss.verdict(by[("ALL", "y")], "auc")
    below = dict(by[("a", "y")], diff={**a, "pepnet - alone": {"auc": ss.paired([0.60, 0.61], [0.64, 0.65])}})
    assert "PEPNet below alone beyond seed noise (AUC -0.0400" in ss.verdict(below, "auc")


def test_domain_blind_and_single_task_configs():
    config = parse_config(json.loads(json.dumps(TREE)))
    assert ss.domain_features(config) == {"domain_id", "dom_like"}  # ud_n varies within a domain: kept
    blind = ss.domain_blind(config)
    assert blind.model.name == "shared_bottom"
    groups = blind.schema_.groups
    assert "domain_id" not in groups.general and groups.domain_side == ["user_id"] and "ud_n" in groups.general
    one = ss.single_task(blind, "like")
    assert one.schema_.reported_tasks() == ["like"]
    assert one.schema_.task_weights() == [0.0, 1.0]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seesaw")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TREE))
    res = CliRunner().invoke(app, ["seesaw", str(cfg), "--out", str(tmp / "out"), "--seeds", "2", "--min-class", "20"])
    return tmp, res


def test_command_end_to_end(cli_run):
    tmp, res = cli_run
    assert res.exit_code == 0, res.output
    out = tmp / "out"
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0
    result = json.loads((out / "results.json").read_text())
    assert result["seeds"] == [42, 43] and result["domains"] == ["0", "1", "2"]
    counts = {(c["domain"], c["task"]): (c["positives"], c["negatives"]) for c in result["cells"]}
    assert sum(counts[("ALL", "click")]) == 300  # the 10% test split
    judged = {d for d in result["domains"] if any(min(counts[(d, t)]) >= 20 for t in result["tasks"])}
    assert set(result["runs"]["alone"]) == judged and judged  # an alone model for each judgeable domain only
    assert {"joint", "pepnet", "single:click", "single:like"} <= set(result["runs"])
    # each table entry is the difference of the stored runs' test values, seed by seed
    cell = next(c for c in result["cells"] if c["domain"] in judged and not c["small"])
    d, t = cell["domain"], cell["task"]
    joint = [next(r["auc"] for r in run["report"]["per_domain"] if r["domain"] == d and r["task"] == t)
             for run in result["runs"]["joint"]]
    alone = [next(r["auc"] for r in run["report"]["per_domain"] if r["domain"] == d and r["task"] == t)
             for run in result["runs"]["alone"][d]]
    assert cell["diff"]["joint - alone"]["auc"]["values"] == pytest.approx(np.subtract(joint, alone).tolist())
    # the oracle of the synthetic data and the benchmark table with the gap closed
    assert result["oracle"]["overall"]["click"]["auc"] > 0.5
    assert set(result["benchmark"]["gap_closed"]) == {"joint", "pepnet"}
    assert result["benchmark"]["gap_closed"]["joint"]["auc"]["mean"] == 0.0
    assert len(result["verdicts"]) == len(result["cells"])
    assert all(v in res.output for v in result["verdicts"])
    assert "| domain | task | pos / neg |" in (out / "results.md").read_text()


def test_command_refuses_a_non_empty_out_and_resumes(cli_run):
    tmp, _ = cli_run
    args = ["seesaw", str(tmp / "tiny.yaml"), "--out", str(tmp / "out"), "--seeds", "2", "--min-class", "20"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "is not empty" in res.output
    before = json.loads((tmp / "out" / "results.json").read_text())
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert "start" in res.output and "epoch 1" not in res.output  # every run read back, none trained again
    assert json.loads((tmp / "out" / "results.json").read_text())["cells"] == before["cells"]


def test_compare_folder_with_a_gbdt_fitted_once(tmp_path):
    """A compare folder whose GBDT was fitted once (deterministic, no seed to pair) is read without it; a model
    with other seeds than the diagnostic's is still refused."""
    config = parse_config(TREE)
    runs = [{"seed": s, "report": {}} for s in (42, 43)]
    res = {"config": config.to_dict(), "models": {"pepnet": {"runs": runs},
                                                  "gbdt": {"runs": [{"seed": 42, "fitted_once": True}]}}}
    (tmp_path / "results.json").write_text(json.dumps(res))
    got = ss._load_compare(tmp_path, config, [42, 43])
    assert list(got["models"]) == ["pepnet"] and got["fitted_once"] == ["gbdt"]
    with pytest.raises(ValueError, match="ran seeds"):
        ss._load_compare(tmp_path, config, [42, 43, 44])
