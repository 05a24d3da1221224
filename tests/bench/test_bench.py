"""`pepnet bench` machinery: GEMM recording counts the right FLOPs; a tiny bench run fills every figure,
interleaves the contenders round by round and reports the median and interquartile range of each."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from typer.testing import CliRunner

from pepnet.bench.ablations import interleaved_ms
from pepnet.bench.flops import GemmRecorder, replay_seconds
from pepnet.cli import app


def test_gemm_recorder_counts_linear_flops_forward_and_backward():
    lin = torch.nn.Linear(12, 5)
    x = torch.randn(7, 12, requires_grad=True)
    with GemmRecorder() as fwd:
        y = lin(x)
    assert fwd.flops == 2 * 7 * 12 * 5
    with GemmRecorder() as bwd:
        y.sum().backward()
    assert bwd.flops == 2 * (2 * 7 * 12 * 5)                  # grad input + grad weight
    w = torch.randn(3, 12, 5)
    with GemmRecorder() as bm:
        torch.baddbmm(torch.zeros(3, 1, 5), x.detach().expand(3, -1, -1), w)
    assert bm.flops == 2 * 3 * 7 * 12 * 5
    with torch.inference_mode(), GemmRecorder() as inf:      # reaches the dispatcher as aten.linear
        lin(x)
    assert inf.flops == 2 * 7 * 12 * 5
    assert replay_seconds(inf.gemms, torch.device("cpu"), repeats=1, min_seconds=0.001) > 0
    assert replay_seconds(fwd.gemms + bm.gemms, torch.device("cpu"), repeats=1, min_seconds=0.001) > 0


def test_spread_is_median_and_quartiles():
    from pepnet.bench.core import spread

    assert spread([5.0, 1.0, 3.0, 2.0, 4.0]) == {"median": 3.0, "q1": 2.0, "q3": 4.0}


def test_bench_cli_on_tiny_synthetic(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "synthetic", "--set", "data.synthetic.n_rows=3000", "--set", "data.synthetic.n_users=100",
            "--set", "data.synthetic.n_items=300", "--set", "train.eval_batch_size=512", "--set", "model.dropout=0.1",
            "--set", "train.compile=false", "--batch-size", "256", "--steps", "2", "--repeats", "3", "--warmup", "1",
            "--threads", "1",
            "--json", str(out), "--variant", "plain:", "--variant", "bf16: train.amp=bf16", "--ablations"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "train vs ref" in res.output and "of bound" in res.output and "load average" in res.output
    r = json.loads(out.read_text())
    rows = {row["variant"]: row for row in r["rows"]}
    assert set(rows) == {"plain", "bf16", "reference"} and rows["bf16"]["amp"] == "bf16"
    assert rows["plain"]["compile"] is False  # train.compile=false is kept; "auto" compiles (tests/train/test_compile)
    assert len(r["load_average_start"]) == 3 and len(r["load_average_end"]) == 3
    if sys.platform.startswith("linux"):  # the CPU time stolen by a hypervisor (0 on bare metal)
        assert 0 <= r["cpu_steal"] < 1 and "stolen by the hypervisor" in res.output
    plain = rows["plain"]
    for key in ("train_sps", "infer_sps", "train_bound_sps", "infer_bound_sps", "train_fraction_of_bound",
                "train_vs_reference", "infer_vs_reference"):
        s = plain[key]
        assert 0 < s["q1"] <= s["median"] <= s["q3"] and math.isfinite(s["q3"]), key
        assert len(plain["rounds"][key]) == 3, key  # one figure per interleaved round
    # ratios are taken round by round against the reference's figure of the same round
    ref_train = rows["reference"]["rounds"]["train_sps"]
    assert plain["rounds"]["train_vs_reference"] == [a / b for a, b in
                                                     zip(plain["rounds"]["train_sps"], ref_train, strict=True)]
    assert "train_vs_reference" not in rows["reference"]
    # training GEMMs are ~3x the forward ones (input and weight gradients); the reference runs the same forward
    # FLOPs, and in training a few more: its gates' first layers also compute the gradient of their detached input
    # columns (stop-gradient E and O_ep), which pepnet's (GateNU.first_layer's const) do not
    assert 2.0 < plain["train_flops_per_sample"] / plain["infer_flops_per_sample"] < 3.2
    ref = rows["reference"]
    assert ref["infer_flops_per_sample"] == pytest.approx(plain["infer_flops_per_sample"], rel=0.02)
    assert plain["train_flops_per_sample"] < ref["train_flops_per_sample"] < 1.1 * plain["train_flops_per_sample"]
    assert [a["name"].split()[0] for a in r["ablations"]] == ["towers", "embedding", "embedding"]
    for a in r["ablations"]:  # interleaved like the main rows: median and quartiles of each side and of b / a
        for key in ("a_ms", "b_ms", "b_over_a"):
            assert 0 < a[key]["q1"] <= a[key]["median"] <= a[key]["q3"], (a["b_label"], key)
    assert "b / a" in res.output and "interleaved rounds" in res.output


def test_interleaved_ms_rotates_the_order_every_round():
    order = []
    times = interleaved_ms({k: (lambda k=k: order.append(k)) for k in "abc"}, torch.device("cpu"), repeats=3,
                           inner=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert order[3:] == list("abc" "bca" "cab")  # after one untimed call each
