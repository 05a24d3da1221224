"""What the gates learned: mean Gate NU outputs per domain (EPNet, per general field) and per domain x task
(PPNet, per layer), as tables and a PNG heat map. A value of 1 means "as if ungated"; gates range in [0, gamma]."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from .data.batches import BatchLoader, TensorData
from .data.encoder import EncodedData


@dataclass
class GateSummary:
    """epnet: one row per domain, a column per general field (mean delta over rows and embedding elements);
    ppnet: one row per (domain, layer), a column per task (mean delta over rows and the layer's width)."""

    epnet: pl.DataFrame | None
    ppnet: pl.DataFrame | None

    def write(self, out: str | Path) -> list[Path]:
        """Write gates_epnet.csv, gates_ppnet.csv and gates.png into ``out``; returns the paths written."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in (("epnet", self.epnet), ("ppnet", self.ppnet)):
            if table is not None:
                table.write_csv(out / f"gates_{name}.csv")
                written.append(out / f"gates_{name}.csv")
        written.append(self.plot(out / "gates.png"))
        return written

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plotfonts import use_fonts

        use_fonts()
        tables = [(n, t) for n, t in (("EPNet: mean gate per domain x general field", self.epnet),
                                      ("PPNet: mean gate per (domain, layer) x task", self.ppnet)) if t is not None]
        fig, axes = plt.subplots(1, len(tables), figsize=(7 * len(tables), 0.25 * max(t.height for _, t in tables) + 2.5),
                                 squeeze=False)
        for ax, (title, table) in zip(axes[0], tables, strict=True):
            labels = table.columns[1:] if title.startswith("EP") else table.columns[2:]
            rows = table[table.columns[0]].cast(pl.String).to_list() if title.startswith("EP") else \
                [f"{d} / L{layer}" for d, layer in zip(table[table.columns[0]].to_list(),
                                                       table[table.columns[1]].to_list(), strict=True)]
            values = table.select(labels).to_numpy()
            im = ax.imshow(values, aspect="auto", cmap="coolwarm", vmin=min(values.min(), 2 - values.max()),
                           vmax=max(values.max(), 2 - values.min()))
            ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(rows)), rows, fontsize=7)
            ax.set_title(title, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.04)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def label_column(names: list[str], base: str = "domain") -> str:
    """The name of a label column (``domain``, ``layer``) beside value columns ``names``: ``base``, or
    ``base_label`` (then more underscores) when a field or task is itself named so (a feature named
    ``domain`` must not overwrite the domain labels)."""
    out = base
    while out in names:
        out = f"{out}_label" if out == base else f"{out}_"
    return out


def top_fields(epnet: pl.DataFrame, k: int = 5) -> str:
    """A compact text form of the EPNet table: per domain, the ``k`` fields whose mean gate is farthest from 1
    (1 = as if ungated), most amplified or suppressed first, e.g. ``books  item_id 1.62  user_id 0.48 ...``."""
    label, fields = epnet.columns[0], epnet.columns[1:]
    values = epnet.select(fields).to_numpy()
    names = [str(d) for d in epnet[label].to_list()]
    width = max(map(len, names), default=0)
    lines = [(f"EPNet: per domain, the {min(k, len(fields))} of {len(fields)} fields whose mean gate is farthest "
              "from 1 (all of them in gates_epnet.csv)")]
    for name, row in zip(names, values, strict=True):
        top = np.argsort(-np.abs(row - 1.0), kind="stable")[:k]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{fields[j]} {row[j]:.2f}" for j in top))
    return "\n".join(lines)


@torch.no_grad()
def summarise_gates(model: torch.nn.Module, data: EncodedData, general_names: list[str], tasks: list[str],
                    batch_size: int = 16384) -> GateSummary:
    """Average every gate of ``model`` (a PEPNet-family model: it has ``forward_with_gates``) per domain."""
    if not hasattr(model, "forward_with_gates"):
        raise ValueError(f"model {type(model).__name__} has no PEPNet gates to inspect")
    model.eval()
    device = next(model.parameters()).device
    n_dom = len(data.domain_names)
    domain = torch.from_numpy(np.array(data.domain, dtype=np.int64))
    sums: dict[str, torch.Tensor] = {}
    counts = torch.bincount(domain, minlength=n_dom).double().clamp(min=1)
    start = 0
    for batch in BatchLoader(TensorData(data), batch_size):
        b = batch.to(device)
        _, gates = model.forward_with_gates(b.sparse, b.dense)
        dom = domain[start:start + len(batch)]
        start += len(batch)
        for name, g in gates.items():
            per_row = g.float().mean(-1).double().cpu()  # epnet [B, Fg]; ppnet.l [B, T]
            acc = sums.setdefault(name, torch.zeros(n_dom, per_row.shape[1], dtype=torch.float64))
            acc.index_add_(0, dom, per_row)
    epnet = None
    if "epnet" in sums:
        means = (sums["epnet"] / counts[:, None]).numpy()
        label = label_column(general_names)
        epnet = pl.DataFrame([pl.Series(label, data.domain_names, dtype=pl.String),
                              *(pl.Series(n, means[:, j]) for j, n in enumerate(general_names))])
    layers = sorted((k for k in sums if k.startswith("ppnet.")), key=lambda k: int(k.split(".")[1]))
    ppnet = None
    if layers:
        parts = []
        for k in layers:
            means = (sums[k] / counts[:, None]).numpy()
            parts.append(pl.DataFrame([pl.Series(label_column(tasks), data.domain_names, dtype=pl.String),
                                       pl.Series(label_column(tasks, "layer"), [int(k.split(".")[1])] * n_dom),
                                       *(pl.Series(t, means[:, j]) for j, t in enumerate(tasks))]))
        ppnet = pl.concat(parts)
    return GateSummary(epnet, ppnet)


def run_gates(run, data: EncodedData) -> GateSummary:
    """Gate summary of a :class:`pepnet.run.Run` on encoded data."""
    general = [run.encoder.fields[i].name for i in run.encoder.group("general")]
    return summarise_gates(run.model, data, general, run.encoder.task_names, run.config.train.eval_batch_size)


__all__ = ["GateSummary", "label_column", "run_gates", "summarise_gates", "top_fields"]
