"""``pepnet inspect``: one request's scores and gate values, from a run directory and a JSON row."""
from __future__ import annotations

import json
from typing import Any


def inspect_row(run, row: dict[str, Any]) -> dict[str, Any]:
    """Scores and gates of ``run`` (a :class:`pepnet.run.Run`) on one request ``row`` (column -> value, the
    columns of the run's data; labels not needed).

    Returns ``{"scores": {task: p}, "epnet": {field: mean gate} | None, "ppnet": {"layer l": {task: mean gate}}
    | None}``: EPNet gates averaged over each field's embedding elements, PPNet gates over each layer's width.
    """
    import polars as pl
    import torch

    from .data.sources import Frame
    from .data.validate import validated
    from .run import transform

    df = pl.DataFrame([row]).with_columns(pl.lit(0, dtype=pl.UInt16).alias("__file"),
                                         pl.int_range(pl.len(), dtype=pl.Int64).alias("__row"))
    frame = validated(Frame(df, ["--row"]), run.encoder.schema, labels=False)
    enc = transform(run.encoder, frame)
    sparse, dense = (torch.from_numpy(a).to(run.device) for a in (enc.sparse, enc.dense))
    tasks = run.encoder.task_names
    with torch.no_grad():
        if hasattr(run.model, "forward_with_gates"):
            logits, gates = run.model.forward_with_gates(sparse, dense)
        else:
            logits, gates = run.model(sparse, dense), {}
    probs = torch.sigmoid(logits).double().cpu().numpy()[0]
    general = [run.encoder.fields[i].name for i in run.encoder.group("general")]
    out: dict[str, Any] = {"scores": {t: float(probs[j]) for j, t in enumerate(tasks)}, "epnet": None, "ppnet": None}
    if "epnet" in gates:
        ep = gates["epnet"].float().mean(-1).cpu().numpy()[0]  # [Fg]
        out["epnet"] = {n: float(v) for n, v in zip(general, ep, strict=True)}
    layers = sorted((k for k in gates if k.startswith("ppnet.")), key=lambda k: int(k.split(".")[1]))
    if layers:
        out["ppnet"] = {f"layer {k.split('.')[1]}": {t: float(v) for t, v in zip(
            tasks, gates[k].float().mean(-1).cpu().numpy()[0], strict=True)} for k in layers}
    return out


def format_inspection(result: dict[str, Any]) -> str:
    """Readable text of :func:`inspect_row`'s result: scores, then gates (1 = as if ungated)."""
    lines = ["scores:"] + [f"  p_{t} = {p:.4f}" for t, p in result["scores"].items()]
    if result["epnet"]:
        width = max(map(len, result["epnet"]))
        lines.append("EPNet gate per general field (1 = as if ungated):")
        lines += [f"  {n:<{width}}  {v:.3f}" for n, v in result["epnet"].items()]
    if result["ppnet"]:
        tasks = list(next(iter(result["ppnet"].values())))
        lines.append("PPNet gate per layer x task: " + "  ".join(tasks))
        lines += [f"  {layer}: " + "  ".join(f"{v[t]:.3f}" for t in tasks) for layer, v in result["ppnet"].items()]
    return "\n".join(lines)


def parse_row(text: str) -> dict[str, Any]:
    """The ``--row`` JSON object; a ValueError that says what was expected otherwise."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--row: not valid JSON ({exc}); expected an object like '{{\"user_id\": 3, ...}}'") from None
    if not isinstance(row, dict) or not row:
        raise ValueError("--row: expected a non-empty JSON object of column -> value")
    return row


__all__ = ["format_inspection", "inspect_row", "parse_row"]
