"""Evaluation metrics: exact AUC / GAUC / log loss and per-domain, per-task reports."""
from pepnet.metrics.ranking import auc, gauc, logloss
from pepnet.metrics.report import ALL_DOMAINS, COLUMNS, METRIC_COLUMNS, MetricsReport, evaluate

__all__ = ["ALL_DOMAINS", "COLUMNS", "METRIC_COLUMNS", "MetricsReport", "auc", "evaluate", "gauc", "logloss"]
