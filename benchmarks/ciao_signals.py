"""Is there signal for Ciao's tasks beyond the statistics of the past? The GBDT reference, validation only.

    python benchmarks/ciao_signals.py --out runs/ciao_signals

Fits the GBDT reference of ``pepnet compare`` (the config's ``gbdt`` trees, one per task, best round chosen on
validation AUC) on the statistics of the past of ``configs/ciao.yaml``, then with more information:

- ``trust``: statistics of the users each user trusts (``shared/data/ciao/trust.parquet``, 57,544 links without
  time stamps): their rows, smoothed like and helpful rates and mean rating, over all their earlier rows and
  over those in the row's category (training rows: rows before the row's day; validation rows: the training
  split), and how many users the user trusts and is trusted by.
- ``realtime counts``: the four counts of the config with ``realtime: true`` (pepnet's own option): a
  validation row also counts the validation rows of earlier days, as a serving system's counters would. They
  *replace* the frozen counts: on training rows the two are identical columns, and a tree given both splits
  on the first and never reads the other.
- ``+ days``: label-free times on top of the realtime counts, across the split boundary: days since the
  key's previous row and since its first row; per user, item, category and user x category.
- ``+ same-day rows``: also the number of rows on the row's own day. Days are the data's time resolution,
  so this counts rows later that day too, which serving could not know: an upper bound, not a feature.

The test split is never read. Writes ``signals.md`` (validation AUC per task on all rows, and on the rows of
users unseen in training and of the others) and prints it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from pepnet.compare.gbdt import stat_matrix, train_trees
from pepnet.config import ExperimentConfig, GBDTConfig, SchemaConfig, load_config
from pepnet.data.validate import label_expr
from pepnet.prepare import Prepared, encode_splits, prepare

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400
PRIOR = 5.0  # smoothing rows of the trust rates, towards the training mean
KEYS = (["user_id"], ["item_id"], ["category_id"], ["user_id", "category_id"])


def labelled(df: pl.DataFrame, schema: SchemaConfig) -> pl.DataFrame:
    """``df`` with float targets ``like`` and ``helpful`` (the config's labels, :func:`label_expr`) and
    ``rating_f`` (the rating)."""
    return df.with_columns(like=label_expr(schema.labels["like"]), helpful=label_expr(schema.labels["helpful"]),
                           rating_f=pl.col("rating").cast(pl.Float64))


def trust_block(train: pl.DataFrame, rows: pl.DataFrame, trust: pl.DataFrame, schema: SchemaConfig,
                training: bool) -> np.ndarray:
    """[len(rows), 10]: per key (user; user x category) log1p(rows) and smoothed like / helpful / rating of the
    trusted users' training rows before the row's day (``training``) or all of them; then log1p of the user's
    out- and in-degree in the trust graph."""
    t = labelled(train, schema)
    mean = {c: t[c].mean() for c in ("like", "helpful", "rating_f")}
    events = trust.join(t.select("user_id", "category_id", "timestamp", *mean), left_on="trustee", right_on="user_id")
    events = events.rename({"truster": "user_id"})
    cols: list[np.ndarray] = []
    for keys in (["user_id"], ["user_id", "category_id"]):
        per_day = (events.group_by([*keys, "timestamp"])
                   .agg(n=pl.len(), **{c: pl.col(c).sum() for c in mean}).sort([*keys, "timestamp"]))
        if training:  # cumulative totals, joined as of the day before each row
            per_day = per_day.with_columns([pl.col(c).cum_sum().over(keys) for c in ("n", *mean)])
            query = rows.select(*keys, "timestamp").with_row_index("_i").sort("timestamp")
            got = query.join_asof(per_day.sort("timestamp"), on="timestamp", by=keys, strategy="backward",
                                  allow_exact_matches=False, check_sortedness=False).sort("_i")
        else:
            totals = per_day.group_by(keys).agg([pl.col(c).sum() for c in ("n", *mean)])
            got = rows.select(keys).join(totals, on=keys, how="left", maintain_order="left")
        n = got["n"].fill_null(0).cast(pl.Float64).to_numpy()
        cols.append(np.log1p(n))
        cols += [(got[c].fill_null(0.0).to_numpy() + PRIOR * m) / (n + PRIOR) for c, m in mean.items()]
    for side in ("truster", "trustee"):
        degree = trust.group_by(side).agg(d=pl.len()).rename({side: "user_id"})
        d = rows.select("user_id").join(degree, on="user_id", how="left", maintain_order="left")["d"]
        cols.append(np.log1p(d.fill_null(0).cast(pl.Float64).to_numpy()))
    return np.column_stack(cols)


def days_block(frames: list[pl.DataFrame], same_day: bool) -> list[np.ndarray]:
    """For the rows of ``frames`` (in time order, earlier splits first), per key of :data:`KEYS`: days since the
    key's previous day with a row (-1: none) and days since its first row, and with ``same_day`` log1p(rows on
    this day). One [len(frame), 8 or 12] array per frame."""
    both = pl.concat([f.select(*dict.fromkeys(k for ks in KEYS for k in ks), "timestamp").with_columns(_s=pl.lit(i))
                      for i, f in enumerate(frames)], how="vertical_relaxed").with_row_index("_i")
    cols: list[np.ndarray] = []
    for keys in KEYS:
        days = (both.group_by([*keys, "timestamp"]).agg(n=pl.len()).sort([*keys, "timestamp"])
                .with_columns(prev=pl.col("timestamp").shift(1).over(keys),
                              first=pl.col("timestamp").min().over(keys)))
        got = both.join(days, on=[*keys, "timestamp"], how="left").sort("_i")
        cols += [((got["timestamp"] - got["prev"]) / DAY).fill_null(-1.0).cast(pl.Float64).to_numpy(),
                 ((got["timestamp"] - got["first"]) / DAY).cast(pl.Float64).to_numpy()]
        if same_day:
            cols.append(np.log1p(got["n"].cast(pl.Float64).to_numpy()))
    x, split = np.column_stack(cols), both["_s"].to_numpy()
    return [x[split == i] for i in range(len(frames))]


def stack(*blocks: list[np.ndarray]) -> list[np.ndarray]:
    """Blocks of [training, validation] matrices joined column-wise, split by split."""
    return [np.hstack(parts) for parts in zip(*blocks, strict=True)]


def with_realtime_counts(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with ``realtime: true`` on every count statistic."""
    d = cfg.model_dump(by_alias=True)
    for stat in d["schema"]["stats"]:
        stat["realtime"] = stat["stat"] == "count"
    return ExperimentConfig.model_validate(d)


def validation_auc(prep: Prepared, x_train: np.ndarray, x_valid: np.ndarray, gbdt: GBDTConfig,
                   seed: int) -> dict[str, tuple]:
    """Per reported task, the trees of ``pepnet compare`` (:func:`~pepnet.compare.gbdt.train_trees`) on
    ``x_train``: (best validation AUC over the rounds, that round, AUC on rows of users unseen in training, AUC on
    the others)."""
    enc = prep.encoder
    j = enc.field_index(enc.schema.user)
    cold = prep.encoded["valid"].sparse[:, j] == enc.sparse_fields[j].offset  # the out-of-vocabulary row
    out = {}
    for t, task in zip(enc.reported_columns, enc.reported_tasks, strict=True):
        yv = prep.encoded["valid"].labels[:, t]
        keep_v = ~np.isnan(yv)
        clf = train_trees(x_train, prep.encoded["train"].labels[:, t], gbdt, gbdt.max_iter, seed)
        staged = [p[:, 1] for p in clf.staged_predict_proba(x_valid[keep_v])]
        scores = [roc_auc_score(yv[keep_v], p) for p in staged]
        best = int(np.argmax(scores))
        p, y_best, c = staged[best], yv[keep_v], cold[keep_v]
        out[task] = (scores[best], best + 1, roc_auc_score(y_best[c], p[c]), roc_auc_score(y_best[~c], p[~c]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "ciao.yaml")
    ap.add_argument("--trust", type=Path, default=ROOT.parent / "shared" / "data" / "ciao" / "trust.parquet")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=Path("runs/ciao_signals"))
    a = ap.parse_args()
    start = time.perf_counter()
    cfg = load_config(a.config)
    prep = prepare(cfg, log=lambda _: None, splits=("train", "valid"))
    train, valid = prep.frames["train"].df, prep.frames["valid"].df
    base = [stat_matrix(prep, "train"), stat_matrix(prep, "valid")]
    trust = pl.read_parquet(a.trust)
    rt = encode_splits(with_realtime_counts(cfg), prep.frames, splits=("train", "valid"))  # same rows, loaded once
    realtime = [stat_matrix(rt, "train"), stat_matrix(rt, "valid")]
    inputs = {
        "statistics of the past (the GBDT of `pepnet compare`)": base,
        "+ trust": stack(base, [trust_block(train, train, trust, cfg.schema_, True),
                                trust_block(train, valid, trust, cfg.schema_, False)]),
        "realtime counts": realtime,
        "realtime counts + days": stack(realtime, days_block([train, valid], same_day=False)),
        "realtime counts + days + same-day rows (leak bound)":
            stack(realtime, days_block([train, valid], same_day=True)),
    }
    tasks = prep.encoder.reported_tasks
    lines = ["| inputs | " + " | ".join(f"{t} AUC (round) | {t} unseen / seen users" for t in tasks) + " |",
             "|---|" + "---|---|" * len(tasks)]
    for name, x in inputs.items():
        res = validation_auc(prep, *x, cfg.gbdt, a.seed)
        cells = [f"{auc:.4f} ({r}) | {c:.4f} / {w:.4f}" for auc, r, c, w in res.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + f"\n\nvalidation split, seed {a.seed}, {time.perf_counter() - start:.0f} s\n"
    (a.out / "signals.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
