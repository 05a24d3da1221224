"""Component measurements behind the design choices (``pepnet bench --ablations``).

* towers: one tower after the other (:class:`~pepnet.nn.TaskTowers`, each tower's activations stay in cache)
  against all T towers stacked in one ``baddbmm`` per layer ([T, B, w] activations), same weights and gates,
  forward + backward;
* embeddings: the fused table with sparse (row-wise) gradients and RowWiseAdagrad (which applies a small table's
  gradient to the whole table on CPU), against
  torch.optim.Adagrad on the same sparse gradients (coalesce) and against dense gradients (a full-table
  gradient every step); lookup + backward + Adagrad step.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from ..config import ExperimentConfig
from ..data.batches import TensorData
from ..nn import FeatureEmbedding, TaskTowers
from ..train.sparse_adagrad import RowWiseAdagrad


def _median_ms(fn: Callable[[], None], device: torch.device, repeats: int = 7, inner: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) / inner * 1e3)
    return statistics.median(times)


def _slices(gates: list[torch.Tensor]) -> Callable[[int, int], torch.Tensor]:
    """TaskTowers' gate callback over stacked gates [T, B, w]: (layer, task) -> [B, w]."""
    return lambda layer, t: gates[layer][t]


def _stacked_towers(towers: TaskTowers, x: torch.Tensor, gates: list[torch.Tensor]) -> torch.Tensor:
    """The same function as ``towers(x, _slices(gates))`` (gate_on="input"), all tasks at once:
    activations [T, B, w], one ``baddbmm`` per layer."""
    h = x.unsqueeze(0).expand(towers.n_tasks, -1, -1)
    for layer, (w, b) in enumerate(zip(towers.weights, towers.biases, strict=True)):
        h = towers.dropout(torch.relu(torch.baddbmm(b, h * gates[layer], w)))
    return torch.baddbmm(towers.out_bias, h, towers.out_weight).squeeze(-1).transpose(0, 1)


def run_ablations(config: ExperimentConfig, layout, data: TensorData, device: torch.device,
                  log: Callable[[str], None] = print) -> list[dict]:
    mc, tc = config.model, config.train
    B, d, T = tc.batch_size, mc.embedding_dim, layout.n_tasks
    amp = tc.amp == "bf16"
    ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)  # noqa: E731
    rows = []

    # --- towers: one after the other vs stacked (baddbmm)
    in_dim = len(layout.group("general")) * d
    towers = TaskTowers(in_dim, mc.hidden_units, T).to(device)
    x = torch.randn(B, in_dim, device=device, requires_grad=True)
    gates = [torch.rand(T, B, w, device=device) * 2 for w in towers.gate_widths]
    with torch.no_grad():
        same = torch.allclose(towers(x, _slices(gates)), _stacked_towers(towers, x, gates), rtol=1e-4, atol=1e-5)

    def run(f, towers=towers, x=x, gates=gates):  # bound now: the names are deleted below
        def step():
            with ctx():
                y = f(towers, x, gates)
            y.float().sum().backward()
        return step

    a = _median_ms(run(lambda m, x, g: m(x, _slices(g))), device)
    b = _median_ms(run(_stacked_towers), device)
    rows.append({"name": f"towers {T}x{[in_dim, *mc.hidden_units]} fwd+bwd", "a_label": "tower by tower",
                 "a_ms": a, "b_label": "stacked baddbmm", "b_ms": b, "note": f"same outputs: {same}"})
    log(f"[ablation] towers: tower by tower {a:.2f} ms, stacked {b:.2f} ms")
    del towers, x, gates, run

    # --- embeddings: RowWiseAdagrad vs torch's sparse Adagrad (coalesce) vs dense gradients
    batch = data.batch(slice(0, min(B, len(data)))).to(device)
    res = {}
    for label, opt_cls, sparse in (("RowWiseAdagrad", RowWiseAdagrad, True),
                                   ("torch sparse", torch.optim.Adagrad, True),
                                   ("dense grad", torch.optim.Adagrad, False)):
        emb = FeatureEmbedding(layout.num_embeddings, layout.n_dense, d, sparse_grad=sparse).to(device)
        opt = opt_cls(emb.embedding_parameters(), lr=tc.embedding_lr)

        def step(opt=opt, emb=emb):  # this iteration's table and optimiser
            opt.zero_grad(set_to_none=True)
            emb(batch.sparse, batch.dense).sum().backward()
            opt.step()

        res[label] = _median_ms(step, device)
        step()
        g = emb.table.weight.grad
        assert g is not None  # step() just ran the backward pass
        res[f"{label} MiB"] = (g._values().numel() if g.is_sparse else g.numel()) * g.element_size() / 2**20
        del emb, opt, step
    what = f"embedding {layout.num_embeddings:,} rows x {d}: lookup+bwd+Adagrad"
    ours = res["RowWiseAdagrad"]
    rows.append({"name": what, "a_label": "RowWiseAdagrad", "a_ms": ours, "b_label": "torch sparse",
                 "b_ms": res["torch sparse"], "note": "RowWiseAdagrad vs torch.optim.Adagrad (coalesce)"})
    rows.append({"name": what, "a_label": "RowWiseAdagrad", "a_ms": ours, "b_label": "dense grad",
                 "b_ms": res["dense grad"],
                 "note": f"gradient {res['RowWiseAdagrad MiB']:.1f} MiB (sparse) vs "
                         f"{res['dense grad MiB']:.1f} MiB (dense)"})
    log(f"[ablation] embedding: RowWiseAdagrad {ours:.2f} ms, torch sparse {res['torch sparse']:.2f} ms, "
        f"dense {res['dense grad']:.2f} ms")
    return rows
