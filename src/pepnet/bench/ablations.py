"""Component measurements behind the design choices (``pepnet bench --ablations``).

* towers: one tower after the other (:class:`~pepnet.nn.TaskTowers`, each tower's activations stay in cache)
  against all T towers stacked in one ``baddbmm`` per layer ([T, B, w] activations), same weights and gates,
  forward + backward, eager (the bench's own rows measure the compiled model, where a compiler exists);
* embeddings: the fused table with sparse (row-wise) gradients and RowWiseAdagrad (which applies a small table's
  gradient to the whole table on CPU), against torch.optim.Adagrad on the same sparse gradients (coalesce) and
  against dense gradients (a full-table gradient every step); lookup + backward + Adagrad step.

Like the bench's main rows, the alternatives of one ablation are timed interleaved: round after round
(``repeats``), each runs one window of ``inner`` calls, in an order rotated every round, so that all of them see
the same load. Each alternative's ms per call and each ratio to the first (taken round by round) are given as
median and interquartile range over the rounds (:func:`~pepnet.bench.core.spread`).
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
from .core import rotated, spread
from .flops import sync


def interleaved_ms(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int,
                   inner: int = 5) -> dict[str, list[float]]:
    """ms per call of each of ``fns`` (label -> call), one window of ``inner`` calls per label and round, over
    ``repeats`` rounds in an order rotated every round (after one untimed call each): label -> [ms per round]."""
    for fn in fns.values():
        fn()
    labels = list(fns)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(repeats):
        for label in rotated(labels, r):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                fns[label]()
            sync(device)
            times[label].append((time.perf_counter() - t0) / inner * 1e3)
    return times


def _rows(name: str, times: dict[str, list[float]], notes: dict[str, str]) -> list[dict]:
    """One result row per alternative after the first (``a``, the design pepnet uses): both ms-per-call
    spreads and the per-round ratio b / a."""
    (a_label, a), *others = times.items()
    return [{"name": name, "a_label": a_label, "a_ms": spread(a), "b_label": b_label, "b_ms": spread(b),
             "b_over_a": spread([y / x for x, y in zip(a, b, strict=True)]), "note": notes.get(b_label, "")}
            for b_label, b in others]


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


def run_ablations(config: ExperimentConfig, layout, data: TensorData, device: torch.device, repeats: int = 5,
                  log: Callable[[str], None] = print) -> list[dict]:
    """The ablations of the module docstring at the config's batch size, each interleaved over ``repeats``
    rounds; one row per (design, alternative) pair."""
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

    times = interleaved_ms({"tower by tower": run(lambda m, x, g: m(x, _slices(g))),
                            "stacked baddbmm": run(_stacked_towers)}, device, repeats)
    rows += _rows(f"towers {T}x{[in_dim, *mc.hidden_units]} fwd+bwd (eager)", times,
                  {"stacked baddbmm": f"same outputs: {same}"})
    log("[ablation] towers: " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in times.items()))
    del towers, x, gates, run

    # --- embeddings: RowWiseAdagrad vs torch's sparse Adagrad (coalesce) vs dense gradients
    batch = data.batch(slice(0, min(B, len(data)))).to(device)
    steps: dict[str, Callable[[], None]] = {}
    mib: dict[str, float] = {}
    for label, opt_cls, sparse in (("RowWiseAdagrad", RowWiseAdagrad, True),
                                   ("torch sparse", torch.optim.Adagrad, True),
                                   ("dense grad", torch.optim.Adagrad, False)):
        emb = FeatureEmbedding(layout.num_embeddings, layout.n_dense, d, sparse_grad=sparse).to(device)
        opt = opt_cls(emb.embedding_parameters(), lr=tc.embedding_lr)

        def step(opt=opt, emb=emb):  # this alternative's table and optimiser
            opt.zero_grad(set_to_none=True)
            emb(batch.sparse, batch.dense).sum().backward()
            opt.step()

        step()
        g = emb.table.weight.grad
        assert g is not None  # step() just ran the backward pass
        mib[label] = (g._values().numel() if g.is_sparse else g.numel()) * g.element_size() / 2**20
        steps[label] = step
    times = interleaved_ms(steps, device, repeats)
    rows += _rows(f"embedding {layout.num_embeddings:,} rows x {d}: lookup+bwd+Adagrad", times,
                  {"torch sparse": "RowWiseAdagrad vs torch.optim.Adagrad (coalesce)",
                   "dense grad": f"gradient {mib['RowWiseAdagrad']:.1f} MiB (sparse) vs {mib['dense grad']:.1f} MiB "
                                 "(dense)"})
    log("[ablation] embedding: " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in times.items()))
    return rows
