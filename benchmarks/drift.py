"""Online vs frozen PEPNet on a drifting synthetic stream (progressive validation).

    python benchmarks/drift.py --periods 8 --rows 160000 --drift 0.6 --out runs/drift

The generator's domain biases shift and its domain interaction matrices rotate by ``drift`` per period
(pepnet.datasets.synthetic). Both models see period 0 the same way (encoder fitted on it, ``--passes``
training passes). Then, for every later period, both are evaluated on it before any training on it;
the *online* model then trains on it (``pepnet stream``), the *frozen* one never trains again (encoder and
weights fixed). Writes drift.csv (progressive mean AUC / GAUC per period of both) and drift.png.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import polars as pl

from pepnet.config import load_config
from pepnet.datasets.synthetic import SyntheticSpec, write
from pepnet.stream import OnlineRun, period_files, stream

CONFIG = Path(__file__).resolve().parents[1] / "src" / "pepnet" / "configs" / "synthetic.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--periods", type=int, default=8)
    ap.add_argument("--rows", type=int, default=160_000, help="rows in all (split evenly over the periods)")
    ap.add_argument("--users", type=int, default=4_000)
    ap.add_argument("--items", type=int, default=8_000)
    ap.add_argument("--drift", type=float, default=0.6)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--reserve", type=int, default=4_000, help="reserve rows of user_id, item_id, author_id")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/drift"))
    a = ap.parse_args()

    shutil.rmtree(a.out, ignore_errors=True)
    spec = SyntheticSpec(n_rows=a.rows, n_users=a.users, n_items=a.items, n_authors=max(a.items // 20, 1),
                         n_domains=3, drift=a.drift, n_periods=a.periods, seed=a.seed)
    write(spec, a.out / "periods", files="periods", progress=False)
    files = period_files(a.out / "periods")
    overrides = [f"schema.features.{i}.reserve={a.reserve}" for i in range(3)] + [
        "train.progress=false", f"data.files=[{files[0]}]", "data.dataset=null"]
    config = load_config(CONFIG, overrides)

    t0 = time.perf_counter()
    online = stream(files, a.out / "online", config, passes=a.passes, log=lambda _: None)
    t_online = time.perf_counter() - t0
    frozen = OnlineRun.create(config, pl.read_parquet(files[0]), a.out / "frozen", log=lambda _: None)
    frozen.period(files[0], passes=a.passes, fitted_on_it=True)
    for f in files[1:]:
        frozen.period(f, learn=False)

    cols = ["period", "mean_auc", "mean_gauc"]
    on = pl.DataFrame(online.history, infer_schema_length=None).select(cols)
    fr = pl.DataFrame(frozen.history, infer_schema_length=None).select(cols)
    table = on.join(fr, on="period", suffix="_frozen").rename(
        {"mean_auc": "mean_auc_online", "mean_gauc": "mean_gauc_online"})
    table = table.with_columns(auc_gain=pl.col("mean_auc_online") - pl.col("mean_auc_frozen"))
    table.write_csv(a.out / "drift.csv")
    later = table.filter(pl.col("period") >= 1)
    with pl.Config(tbl_rows=100, float_precision=4):
        print(table)
    print(f"periods 1..{a.periods - 1}: mean progressive AUC online {later['mean_auc_online'].mean():.4f}, "
          f"frozen {later['mean_auc_frozen'].mean():.4f}; "
          f"online wins {int((later['auc_gain'] > 0).sum())}/{later.height} "
          f"periods; online stream took {t_online:.1f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(later["period"], later["mean_auc_online"], marker="o", label="online (evaluate, then train each period)")
    ax.plot(later["period"], later["mean_auc_frozen"], marker="s", label="frozen after period 0")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("period")
    ax.set_ylabel("progressive mean AUC")
    ax.set_title(f"synthetic drift={a.drift}, {a.rows // a.periods:,} rows / period")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "drift.png", dpi=100)
    print(f"written: {a.out / 'drift.csv'}, {a.out / 'drift.png'}")


if __name__ == "__main__":
    main()
