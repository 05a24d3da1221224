"""``pepnet report``: one self-contained HTML page for a run or a comparison, with its PNGs beside it.

The page embeds every image as a base64 PNG and fetches nothing when viewed. For a run directory (`pepnet fit`,
or a per-seed run of `pepnet compare`): training and validation curves, the domain x task table of test AUC
and GAUC with 95% intervals from a user-level bootstrap (:mod:`pepnet.metrics.bootstrap`; values from
metrics.json), calibration per task, score distributions per domain, the EPNet gate heat map and PPNet gate
summary (PEPNet-family models), the config and provenance (run.json). For a comparison directory
(results.json): the models side by side per domain x task, each model's paired difference from the reference
with its interval and the seeds agreeing, the ablations, and the warnings of the comparison.
"""
from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write
from .metrics import ALL_DOMAINS

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",sans-serif;margin:0;
 color:#1d2430;background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:20px 28px 48px}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #d5d9e0;
 padding-bottom:.25rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}
.sub{color:#5a6474;margin:0 0 1rem}.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 16px;
 margin:10px 0;overflow-x:auto}
img{max-width:100%;height:auto;display:block;margin:0 auto}
table{border-collapse:collapse;font-size:.84rem;font-variant-numeric:tabular-nums}
th,td{padding:4px 9px;border-bottom:1px solid #eceef2;text-align:right;white-space:nowrap}
th{background:#f0f2f5;font-weight:600}td:first-child,th:first-child{text-align:left}
td.ci{color:#6b7380;font-size:.78rem}.pos{color:#0b7a3b}.neg{color:#b3261e}.muted{color:#8a93a3}
.warn{background:#fff6e0;border-color:#f0c36d}pre{font-size:.78rem;white-space:pre-wrap;margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
summary{cursor:pointer;font-weight:600}table.kv td{text-align:left;white-space:normal}
"""


# --------------------------------------------------------------------------- HTML pieces


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _num(v: float | None, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _table(header: list[str] | None, rows: list[list[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are HTML already). Without a header: a
    key-value table (left-aligned)."""
    cell = (lambda c: c) if raw else _esc
    head = "<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    cls = "" if header else ' class="kv"'
    return f"<table{cls}>{head}<tbody>{body}</tbody></table>"


def _img(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _page(title: str, subtitle: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{_esc(title)}</h1><p class=\"sub\">{_esc(subtitle)}</p>" + "".join(sections)
            + "</main></body></html>\n")


class _Figures:
    """Saves matplotlib figures as PNGs named ``<stem>_<name>.png`` beside the HTML file."""

    def __init__(self, html_path: Path):
        import matplotlib

        matplotlib.use("Agg")
        from .plotfonts import use_fonts

        use_fonts()
        self.dir, self.stem, self.paths = html_path.parent, html_path.stem, []

    def save(self, fig: Any, name: str) -> Path:
        import matplotlib.pyplot as plt

        path = self.dir / f"{self.stem}_{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        self.paths.append(path)
        return path


# --------------------------------------------------------------------------- a run


def _run_predictions(run_dir: Path):
    """The run's test predictions: test_predictions.parquet, or (older runs) the final model scored again."""
    from .metrics.predictions import Predictions, read_predictions
    from .run import PREDICTIONS_FILE, Run, reported_probs

    if (run_dir / PREDICTIONS_FILE).is_file():
        return read_predictions(run_dir / PREDICTIONS_FILE)
    run = Run.load(run_dir)
    test = run.test_data()
    cols = run.encoder.reported_columns
    probs = reported_probs(run.model, test, run.encoder, run.config.train.eval_batch_size, run.device)
    return Predictions(test.labels[:, cols].astype(np.float64), probs.astype(np.float64), test.domain, test.user,
                       list(test.domain_names), list(run.encoder.reported_tasks))


def _curves(history: list[dict[str, str]], figs: _Figures) -> str:
    import matplotlib.pyplot as plt

    if not history:
        return ""
    epochs = [int(h["epoch"]) for h in history]
    valid = [k for k in history[0] if k.startswith("valid_") and k.endswith("_auc") and not k.startswith("valid_mean")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    axes[0].plot(epochs, [float(h["train_loss"]) for h in history], marker="o")
    axes[0].set(title="training loss (sum over tasks)", xlabel="epoch")
    for k in valid:
        axes[1].plot(epochs, [float(h[k]) if h[k] else math.nan for h in history], marker="o", label=k[6:-4])
    axes[1].set(title="validation AUC per task", xlabel="epoch")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    return _img(figs.save(fig, "curves"), "training and validation curves")


def _intervals(pred, metrics: dict[str, Any], n_boot: int) -> dict[tuple[str, str, str], Any]:
    """(domain, task, metric) -> metrics.json's value with its user-level bootstrap interval."""
    from .metrics.bootstrap import interval, replicates

    values = {(ALL_DOMAINS, t, m): v[m] for t, v in metrics["overall"].items() for m in ("auc", "gauc")}
    values |= {(r["domain"], r["task"], m): r[m] for r in metrics["per_domain"] for m in ("auc", "gauc")}
    reps = replicates(pred.labels, pred.probs[None], pred.domain, pred.user, pred.domain_names, pred.tasks, n_boot)
    return {k: interval(math.nan if values.get(k) is None else values[k], r[0]) for k, r in reps.items()}


def _metric_table(metrics: dict[str, Any], ivs: dict, metric: str) -> str:
    """Domains x tasks: metrics.json's value with its 95% interval underneath."""
    cells = {(r["domain"], r["task"]): r for r in metrics["per_domain"]}
    cells.update({(ALL_DOMAINS, t): {**v, "domain": ALL_DOMAINS, "task": t} for t, v in metrics["overall"].items()})
    rows = []
    for d in [ALL_DOMAINS, *metrics["domains"]]:
        row = [f"<b>{_esc(d)}</b>" if d == ALL_DOMAINS else _esc(d)]
        for t in metrics["tasks"]:
            r = cells.get((d, t), {})
            iv = ivs.get((d, t, metric))
            ci = (f'<br><span class="ci">[{_num(iv.low, 3)}, {_num(iv.high, 3)}]</span>'
                  if iv is not None and not math.isnan(iv.low) else "")
            row.append(f'<span data-metric="{metric}" data-domain="{_esc(d)}" data-task="{_esc(t)}">'
                       f"{_num(r.get(metric))}</span>{ci}")
        row.append(_esc(cells.get((d, metrics["tasks"][0]), {}).get("rows", "")))
        rows.append(row)
    return _table(["domain", *[f"{t} {metric.upper()}" for t in metrics["tasks"]], "rows"], rows, raw=True)


def _heatmap(metrics: dict[str, Any], figs: _Figures) -> str:
    import matplotlib.pyplot as plt

    domains, tasks = [ALL_DOMAINS, *metrics["domains"]], metrics["tasks"]
    cells = {(r["domain"], r["task"]): r for r in metrics["per_domain"]}
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(domains) + 1.6))
    for ax, metric in zip(axes, ("auc", "gauc"), strict=True):
        vals = np.array([[(metrics["overall"][t] if d == ALL_DOMAINS else cells.get((d, t), {})).get(metric)
                          for t in tasks] for d in domains], dtype=float)
        im = ax.imshow(vals, aspect="auto", cmap="viridis", vmin=np.nanmin(vals) if np.isfinite(vals).any() else 0,
                       vmax=np.nanmax(vals) if np.isfinite(vals).any() else 1)
        for (i, j), v in np.ndenumerate(vals):
            ax.text(j, i, _num(v, 3), ha="center", va="center", fontsize=7, color="w" if v < np.nanmean(vals) else "k")
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_yticks(range(len(domains)), domains, fontsize=7)
        ax.set_title(f"test {metric.upper()} per domain x task")
        fig.colorbar(im, ax=ax, fraction=0.04)
    return _img(figs.save(fig, "heatmap"), "domain x task heat map")


def _calibration(pred, figs: _Figures) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pred.tasks), figsize=(4.2 * len(pred.tasks), 3.6), squeeze=False)
    for ax, (t, task) in zip(axes[0], enumerate(pred.tasks), strict=True):
        keep = ~np.isnan(pred.labels[:, t])
        p, y = pred.probs[keep, t], pred.labels[keep, t]
        edges = np.unique(np.quantile(p, np.linspace(0, 1, 11))) if p.size else np.array([0.0, 1.0])
        b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
        mp = [p[b == i].mean() for i in range(len(edges) - 1) if (b == i).any()]
        my = [y[b == i].mean() for i in range(len(edges) - 1) if (b == i).any()]
        hi = max([*mp, *my, 0.01])
        ax.plot([0, hi], [0, hi], color="0.6", lw=1, ls="--")
        ax.plot(mp, my, marker="o")
        ax.set(title=f"{task}: calibration (10 quantile bins)", xlabel="mean predicted", ylabel="observed rate")
        ax.grid(alpha=0.3)
    return _img(figs.save(fig, "calibration"), "calibration per task")


def _scores(pred, figs: _Figures) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pred.tasks), figsize=(5.5 * len(pred.tasks), 0.3 * len(pred.domain_names) + 1.8),
                             squeeze=False)
    for ax, (t, task) in zip(axes[0], enumerate(pred.tasks), strict=True):
        data = [pred.probs[pred.domain == d, t] for d in range(len(pred.domain_names))]
        ax.boxplot(data, orientation="horizontal", showfliers=False, widths=0.6)
        ax.set_yticks(range(1, len(data) + 1), pred.domain_names, fontsize=7)
        ax.set(title=f"{task}: predicted probability per domain", xlabel="p")
        ax.grid(axis="x", alpha=0.3)
    return _img(figs.save(fig, "scores"), "score distributions per domain")


def _gates(run_dir: Path, figs: _Figures) -> str:
    from .gate_analysis import run_gates
    from .run import Run

    run = Run.load(run_dir)
    if not hasattr(run.model, "forward_with_gates"):
        return f'<p class="muted">model {_esc(run.config.model.name)} has no PEPNet gates.</p>'
    summary = run_gates(run, run.test_data())
    parts = [_img(summary.plot(figs.dir / f"{figs.stem}_gates.png"), "gate heat maps")]
    figs.paths.append(figs.dir / f"{figs.stem}_gates.png")
    if summary.ppnet is not None:
        pp = summary.ppnet
        tasks = pp.columns[2:]
        rows = [[f"layer {layer}"] + [f"{pp.filter(pp[pp.columns[1]] == layer)[t].mean():.3f}"
                                      f" ({pp.filter(pp[pp.columns[1]] == layer)[t].min():.2f}"
                                      f"–{pp.filter(pp[pp.columns[1]] == layer)[t].max():.2f})" for t in tasks]
                for layer in sorted(set(pp[pp.columns[1]].to_list()))]
        parts.append("<h3>PPNet gate per task and layer: mean over domains (min–max)</h3>"
                     + _table(["layer", *tasks], rows))
    return "".join(parts)


def run_report(run_dir: Path, out: Path, n_boot: int = 1000, log: Callable[[str], None] = print) -> list[Path]:
    """Write the HTML report of a run directory to ``out`` and its PNGs beside it; returns the paths."""
    import csv

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    history = (list(csv.DictReader((run_dir / "history.csv").read_text().splitlines()))
               if (run_dir / "history.csv").is_file() else [])
    figs = _Figures(out)
    log("report: test predictions and bootstrap intervals")
    pred = _run_predictions(run_dir)
    ivs = _intervals(pred, metrics, n_boot)
    summary = metrics["summary"]
    sections = [
        '<div class="card">' + _table(["task", "test AUC", "95% CI", "test GAUC", "95% CI", "rows", "positive rate"], [
            [t, _num(v["auc"]), _ci(ivs.get((ALL_DOMAINS, t, "auc"))), _num(v["gauc"]),
             _ci(ivs.get((ALL_DOMAINS, t, "gauc"))), str(v["rows"]), _num(v["positive_rate"], 3)]
            for t, v in metrics["overall"].items()]) + "</div>",
        "<h2>Training</h2>", f'<div class="card">{_curves(history, figs)}</div>',
        "<h2>Test AUC and GAUC per domain</h2>",
        (f'<p class="sub">Values from metrics.json; under each, its 95% interval from a user-level bootstrap of the '
        f"test split ({n_boot} resamples of the users).</p>"),
        f'<div class="card">{_heatmap(metrics, figs)}</div>',
        '<div class="grid">' + "".join(f'<div class="card"><h3>{m.upper()}</h3>{_metric_table(metrics, ivs, m)}</div>'
                                       for m in ("auc", "gauc")) + "</div>",
        "<h2>Calibration</h2>", f'<div class="card">{_calibration(pred, figs)}</div>',
        "<h2>Scores per domain</h2>", f'<div class="card">{_scores(pred, figs)}</div>',
        "<h2>What the gates learned</h2>", f'<div class="card">{_gates(run_dir, figs)}</div>',
        "<h2>Config and provenance</h2>", '<div class="card">' + _table(None, [
            ["seed", str(info.get("seed", ""))], ["git revision", str(info.get("git_revision"))],
            ["rows", ", ".join(f"{k} {v:,}" for k, v in info.get("rows", {}).items())],
            ["versions", ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())],
            ["python / platform", f"{info.get('python', '')} / {info.get('platform', '')}"],
            *[[f"sha256 {Path(f).name}", h[:16] + "…"] for f, h in info.get("data_fingerprints", {}).items()],
        ]) + f"<details><summary>config.yaml</summary><pre>{_esc(config_text)}</pre></details></div>",
    ]
    cfg_name = config_text.split("\n", 1)[0].partition(":")[2].strip() or run_dir.name
    title = f"pepnet run: {cfg_name}"
    sub = (f"{run_dir} · mean test AUC {_num(summary.get('mean_auc'))}, GAUC {_num(summary.get('mean_gauc'))} · "
           f"{len(metrics['domains'])} domains, tasks {', '.join(metrics['tasks'])}")
    atomic_write(out, _page(title, sub, sections))
    return [out, *figs.paths]


def _ci(iv: Any) -> str:
    return "—" if iv is None or math.isnan(iv.low) else f"[{iv.low:.4f}, {iv.high:.4f}]"


# --------------------------------------------------------------------------- a comparison


def _diff_html(cell: dict[str, Any] | None) -> str:
    from .compare.render import format_difference

    if not cell or cell.get("value") is None:
        return "—"
    cls = "pos" if (cell.get("low") or 0) > 0 else "neg" if (cell.get("high") or 0) < 0 else "muted"
    return f'<span class="{cls}">{_esc(format_difference(cell))}</span>'


def compare_report(cmp_dir: Path, out: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Write the HTML report of a `pepnet compare` directory to ``out`` (results.png copied beside it)."""
    from .compare.results import MEAN

    res = json.loads((cmp_dir / "results.json").read_text(encoding="utf-8"))
    labels, tasks = list(res["models"]), list(res["tasks"])
    paired = res.get("paired") or {}
    ref, once = paired.get("reference"), paired.get("reference_fitted_once")
    sections = [f'<div class="card warn">warning: {_esc(w)}</div>' for w in res.get("warnings", [])]
    overall_rows = []
    for m in labels:
        agg = res["models"][m]["aggregate"]
        row = [_esc(m)]
        for t in [*tasks, MEAN]:
            for metric in ("auc", "gauc"):
                c = agg.get(f"{ALL_DOMAINS}|{t}|{metric}", {})
                iv = (res.get("intervals", {}).get(m, {}) or {}).get(f"{ALL_DOMAINS}|{t}|{metric}")
                ci = (f'<br><span class="ci">[{_num(iv["low"], 3)}, {_num(iv["high"], 3)}]</span>'
                      if iv and iv.get("low") is not None else "")
                std = f" ± {c['std']:.4f}" if c.get("n", 1) > 1 and c.get("std") is not None else ""
                row.append(f"{_num(c.get('mean'))}{std}{ci}")
        overall_rows.append(row)
    header = ["model"] + [f"{t} {m.upper()}" for t in [*tasks, MEAN] for m in ("auc", "gauc")]
    sections += ["<h2>Models side by side (overall test split)</h2>",
                 (f'<p class="sub">Mean ± std over {res["n_seeds"]} seed(s); under each, the 95% interval of the '
                 "mean from a user-level bootstrap of the test split.</p>"),
                 f'<div class="card">{_table(header, overall_rows, raw=True)}</div>']
    if (cmp_dir / "results.png").is_file():
        png = out.parent / f"{out.stem}_results.png"
        png.write_bytes((cmp_dir / "results.png").read_bytes())
        sections.append(f'<div class="card">{_img(png, "AUC and GAUC per model")}</div>')
    if paired.get("models"):
        how = ("fitted once (deterministic): seeds are not counted against it" if once else
               "paired by seed; agreeing = seeds whose own difference has the sign of the mean")
        sections += [f"<h2>Difference from {_esc(ref)}, per domain</h2>",
                     (f'<p class="sub">Mean over seeds of the test AUC difference, with its 95% interval from a paired '
                     f"user-level bootstrap ({paired.get('n_boot')} resamples); {ref} is {how}. Green: the interval "
                     "is above 0; red: below; grey: no evidence of a difference.</p>")]
        for t in tasks:
            rows = []
            for d in [ALL_DOMAINS, *res["domains"]]:
                row = [_esc(d)]
                for cells in paired["models"].values():
                    c = cells.get(f"{d}|{t}|auc")
                    seeds = "" if once or not c or not c.get("seeds") or res["n_seeds"] < 2 else \
                        f' <span class="muted">{c["agreeing"]}/{c["seeds"]}</span>'
                    row.append(_diff_html(c) + seeds)
                rows.append(row)
            sections.append(f'<div class="card"><h3>{_esc(t)} AUC − {_esc(ref)}</h3>'
                            f'{_table(["domain", *paired["models"]], rows, raw=True)}</div>')
    for t in tasks:
        rows = []
        for d in [ALL_DOMAINS, *res["domains"]]:
            rows.append([_esc(d)] + [_num(res["models"][m]["aggregate"].get(f"{d}|{t}|auc", {}).get("mean"))
                                     for m in labels])
        sections.append(f'<details class="card"><summary>{_esc(t)} test AUC per domain x model</summary>'
                        f'{_table(["domain", *labels], rows, raw=True)}</details>')
    ablations = [m for m in labels if m.startswith("pepnet[")]
    if ablations and "pepnet" in labels:
        def mean(m: str, t: str) -> float:
            return res["models"][m]["aggregate"][f"{ALL_DOMAINS}|{t}|auc"]["mean"]

        rows = [[_esc(m)] + [f"{_num(mean(m, t))} ({mean(m, t) - mean('pepnet', t):+.4f})" for t in tasks]
                for m in ablations]
        sections += ["<h2>Ablations</h2>", ('<p class="sub">PEPNet with one flag changed: test AUC (difference from '
                     "pepnet's mean).</p>"), f'<div class="card">{_table(["ablation", *tasks], rows, raw=True)}</div>']
    sections += ["<h2>Config</h2>", ('<div class="card"><details><summary>config</summary>'
                 f"<pre>{_esc(json.dumps(res.get('config', {}), indent=1, ensure_ascii=False))}</pre></details></div>")]
    title = f"pepnet compare: {res.get('config_name', cmp_dir.name)}"
    sub = f"{cmp_dir} · {len(labels)} models · {res['n_seeds']} seed(s) · {len(res['domains'])} domains"
    atomic_write(out, _page(title, sub, sections))
    return [out] + ([out.parent / f"{out.stem}_results.png"] if (cmp_dir / "results.png").is_file() else [])


def write_report(path: str | Path, out: str | Path | None = None, n_boot: int = 1000,
                 log: Callable[[str], None] = print) -> list[Path]:
    """The report of a run directory (config.yaml) or a comparison directory (results.json) as ``out``
    (default ``<path>/report.html``), PNGs beside it. Returns the files written."""
    path = Path(path)
    out = Path(out) if out is not None else path / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    if (path / "results.json").is_file():
        return compare_report(path, out, log)
    if (path / "config.yaml").is_file() and (path / "metrics.json").is_file():
        return run_report(path, out, n_boot, log)
    raise FileNotFoundError(f"{path} is neither a run directory (config.yaml and metrics.json) nor a comparison "
                            "directory (results.json)")


__all__ = ["compare_report", "run_report", "write_report"]
