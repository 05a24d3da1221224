"""`pepnet bench` machinery: GEMM recording counts the right FLOPs; a tiny bench run fills every figure."""
from __future__ import annotations

import json
import math

import torch
from typer.testing import CliRunner

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
    assert replay_seconds(fwd.gemms + bm.gemms, torch.device("cpu"), repeats=1, min_seconds=0.001) > 0


def test_bench_cli_on_tiny_synthetic(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "synthetic", "--set", "data.synthetic.n_rows=3000", "--set", "data.synthetic.n_users=100",
            "--set", "data.synthetic.n_items=300", "--set", "train.eval_batch_size=512", "--batch-size", "256",
            "--steps", "2", "--windows", "2", "--warmup", "1", "--threads", "1", "--json", str(out),
            "--variant", "plain:", "--variant", "bf16: train.amp=bf16", "--ablations"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "vs naive" in res.output and "of bound" in res.output
    r = json.loads(out.read_text())
    rows = {row["variant"]: row for row in r["rows"]}
    assert set(rows) == {"plain", "bf16", "naive"} and rows["bf16"]["amp"] == "bf16"
    plain = rows["plain"]
    for key in ("train_sps", "infer_sps", "train_bound_sps", "infer_bound_sps", "train_speedup_vs_naive", "peak_rss_mib"):
        assert math.isfinite(plain[key]) and plain[key] > 0, key
    assert len(plain["train_sps_windows"]) == 2
    # training GEMMs are ~3x the forward ones (input and weight gradients)
    assert 2.0 < plain["train_flops_per_sample"] / plain["infer_flops_per_sample"] < 3.2
    assert [a["name"].split()[0] for a in r["ablations"]] == ["towers", "embedding", "embedding"]
