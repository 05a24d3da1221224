"""One Adam step on a run's dense weights: torch's default (per-parameter loop) against foreach and fused.

    python benchmarks/optimizer_step.py --run RUN_DIR [--threads 2] [--rounds 7]

``RUN_DIR``: a run directory (``pepnet fit`` / ``pepnet quickstart --out``). The dense weights are the ones pepnet's
trainer gives Adam (everything but the embeddings); each variant gets its own copy with the same random
gradients. Rounds alternate the order of the variants; each round times the median step over 0.2 s per variant.
Prints the median and interquartile range of milliseconds per step and of the ratio default / variant.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from backends import per_call_ms  # benchmarks/backends.py (this script's folder is on sys.path)

from pepnet.run import Run
from pepnet.train.optim import make_optimizers

VARIANTS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Run.load(args.run, device="cpu")
    adam = make_optimizers(run.model, run.config.train)[-1]  # the trainer's own split of the weights
    dense = [p for group in adam.param_groups for p in group["params"]]
    grads = [torch.randn_like(p) for p in dense]
    opts = {}
    for name, kw in VARIANTS.items():
        params = [torch.nn.Parameter(p.detach().clone()) for p in dense]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opts[name] = torch.optim.Adam(params, lr=1e-3, **kw)
        opts[name].step()  # state allocated
    ms: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for r in range(args.rounds):
        for name in (list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]):
            ms[name].append(per_call_ms(opts[name].step, 0.2))
    print(f"{sum(p.numel() for p in dense):,} dense weights in {len(dense)} tensors, {args.threads} thread(s), "
          f"{args.rounds} rounds: median [IQR]\n")
    print("| Adam | ms per step | default / this |\n|---|---|---|")
    for name in VARIANTS:
        ratio = [d / x for d, x in zip(ms["default"], ms[name], strict=True)]
        q = [np.percentile(ms[name], p) for p in (50, 25, 75)]
        rq = [np.percentile(ratio, p) for p in (50, 25, 75)]
        print(f"| {name} | {q[0]:.3f} [{q[1]:.3f}-{q[2]:.3f}] | {rq[0]:.2f}x [{rq[1]:.2f}-{rq[2]:.2f}x] |")


if __name__ == "__main__":
    main()
