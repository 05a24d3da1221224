"""The table ``predict`` returns: each input row's keys beside its probabilities, so rows join back by key."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from .data.encoder import Encoder
from .errors import DataError


def prediction_frame(df: pl.DataFrame, encoder: Encoder, probs: np.ndarray, keep: Sequence[str] = (),
                     auxiliary: bool = False, prob_tasks: Sequence[str] | None = None) -> pl.DataFrame:
    """The domain, user, item and time columns the schema names, then the ``keep`` columns of ``df``, then
    ``p_<task>`` from ``probs`` (float32 [N, len(prob_tasks)]; ``prob_tasks`` default: the encoder's tasks) for
    each reported task (for every task, auxiliary ones included, with ``auxiliary``); one row per row of ``df``,
    in its order."""
    schema = encoder.schema
    keys = [c for c in (schema.domain, schema.user, schema.item, schema.time) if c is not None]
    columns = list(dict.fromkeys([*keys, *keep]))
    for col in columns:
        if col not in df.columns:
            shown = ", ".join(c for c in df.columns if not c.startswith("__"))
            raise DataError(f"predictions carry this column, but the input does not have it (columns: {shown})",
                            column=col)
    tasks = encoder.task_names if auxiliary else encoder.reported_tasks
    have = list(prob_tasks) if prob_tasks is not None else encoder.task_names
    return df.select(columns).with_columns([pl.Series(f"p_{t}", probs[:, have.index(t)]) for t in tasks])
