"""The non-neural reference of ``pepnet compare``: gradient-boosted trees on the statistics of the past.

One scikit-learn ``HistGradientBoostingClassifier`` per reported task, on the raw (un-bucketised) statistics
that :class:`~pepnet.data.past_stats.PastStatistics` gives every row: training rows see earlier rows only,
evaluation rows the training split, and the test rows with ``split.test_stats: train+valid`` the validation
split too. The config's ``gbdt`` section gives the trees.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..config import GBDT_GRID, ExperimentConfig, GBDTConfig
from ..metrics import MetricsReport, evaluate
from ..prepare import Prepared

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingClassifier

NAME = "gbdt"


def stat_matrix(prep: Prepared, split: str) -> np.ndarray:
    """The raw statistics of the past of ``split``, float64 [rows, statistics], as the encoder that scores
    that split (:meth:`Prepared.encoder_for`) sees them."""
    past = prep.encoder_for(split).past
    return past.values(prep.frames[split].df, training=(split == "train"))[1]


def train_trees(x: np.ndarray, y: np.ndarray, params: GBDTConfig, rounds: int,
                seed: int) -> HistGradientBoostingClassifier:
    """A HistGradientBoostingClassifier of ``rounds`` rounds (the trees of ``params``) on the rows of
    ``x`` float [N, S] whose label ``y`` float [N] is not NaN."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    keep = ~np.isnan(y)
    clf = HistGradientBoostingClassifier(max_iter=rounds, learning_rate=params.learning_rate,
                                         max_leaf_nodes=params.max_leaf_nodes, min_samples_leaf=params.min_samples_leaf,
                                         l2_regularization=params.l2_regularization, early_stopping=False,
                                         random_state=seed)
    return clf.fit(x[keep], y[keep])


class GBDT:
    """The GBDT baseline on one prepared data set. The statistics of each split are read once (on first use)
    and kept for every seed: ``x`` those of the selection splits, ``x_final`` those of ``train.refit``'s splits.

    With ``refit_config`` (``train.refit``), trees with the rounds chosen on validation are trained afresh on
    training + validation rows (:meth:`Prepared.for_refit`) and predict the test split."""

    def __init__(self, prep: Prepared, params: GBDTConfig, refit_config: ExperimentConfig | None = None):
        if not prep.encoder.schema.stats:
            raise ValueError("model 'gbdt' needs statistics features (schema.stats); the config declares none")
        self.prep, self.params, self.refit_config = prep, params, refit_config
        self.x: dict[str, np.ndarray] = {}
        self.x_final: dict[str, np.ndarray] = {}

    def _features(self, final: bool, split: str) -> np.ndarray:
        cache, prep = (self.x_final, self.final) if final else (self.x, self.prep)
        if split not in cache:
            cache[split] = stat_matrix(prep, split)
        return cache[split]

    @property
    def final(self) -> Prepared:
        """The data of the final trees: the refit splits with ``train.refit``, else the prepared ones."""
        return self.prep.for_refit(self.refit_config) if self.refit_config is not None else self.prep

    def fit(self, seed: int, log: Callable[[str], None] = print) -> tuple[MetricsReport, dict[str, Any], np.ndarray]:
        """Trees per reported task (auxiliary tasks help only shared models): the number of boosting rounds, up
        to ``params.max_iter``, is chosen by validation AUC (staged predictions); the test split is predicted
        once, by the trees up to that round (or by the refit trees). With ``params.tune`` (``gbdt: auto``),
        each task's trees are those of the :func:`candidates` setting with the best validation AUC.
        Returns (test report, {task: best rounds, or with ``tune`` {"rounds", "setting"}}, test predictions
        [N_test, T_reported]). The trees are deterministic (no subsampling, no early-stopping split), so
        ``pepnet compare`` fits them once."""
        from sklearn.metrics import roc_auc_score

        enc, refit, params = self.prep.encoder, self.refit_config is not None, self.params
        log("gbdt: reading the statistics of the past" if not self.x else "gbdt: statistics of the past kept")
        x_train, x_valid = self._features(False, "train"), self._features(False, "valid")
        test = self.final.encoded["test"]
        x_test = self._features(refit, "test")
        probs = np.full((test.labels.shape[0], len(enc.reported_tasks)), np.nan, dtype=np.float64)
        rounds: dict[str, int] = {}
        cols = enc.reported_columns
        settings = candidates(params)
        for j, (t, task) in enumerate(zip(cols, enc.reported_tasks, strict=True)):
            log(f"gbdt {task}: up to {params.max_iter} rounds" + (f", {len(settings)} settings" if params.tune else ""))
            keep = ~np.isnan(self.prep.encoded["valid"].labels[:, t])
            yv = self.prep.encoded["valid"].labels[keep, t]
            fits = []  # (valid AUC, rounds, setting, trees) of each setting at its best round
            for setting in settings:
                clf = train_trees(x_train, self.prep.encoded["train"].labels[:, t], setting, setting.max_iter, seed)
                scores = [roc_auc_score(yv, p[:, 1]) if yv.min() != yv.max() else 0.0
                          for p in clf.staged_predict_proba(x_valid[keep])]
                fits.append((max(scores), int(np.argmax(scores)) + 1, setting, clf))
            score, best, setting, clf = max(fits, key=lambda f: f[0])  # the first of equals
            rounds[task] = {"rounds": best, "setting": setting.grid_point()} if params.tune else best
            if refit:
                trees = train_trees(self._features(True, "train"), self.final.encoded["train"].labels[:, t], setting,
                                    best, seed)
                probs[:, j] = trees.predict_proba(x_test)[:, 1]
            else:
                probs[:, j] = next(p for i, p in enumerate(clf.staged_predict_proba(x_test)) if i == best - 1)[:, 1]
            log(f"gbdt {task}: {best} rounds (valid AUC {score:.4f})"
                + (f", tuned {setting.grid_point()} of {len(fits)} settings" if params.tune else "")
                + (", refit on training + validation rows" if refit else ""))
        report = evaluate(probs, test.labels[:, cols], test.domain, test.user, enc.reported_tasks, test.domain_names)
        return report, rounds, probs


def candidates(params: GBDTConfig) -> list[GBDTConfig]:
    """The tree settings :meth:`GBDT.fit` chooses from on validation: ``params`` itself, or with ``params.tune``
    every point of :data:`pepnet.config.GBDT_GRID` (other keys from ``params``)."""
    if not params.tune:
        return [params]
    keys = list(GBDT_GRID)
    return [params.model_copy(update=dict(zip(keys, values, strict=True)))
            for values in itertools.product(*(GBDT_GRID[k] for k in keys))]


__all__ = ["GBDT", "NAME", "candidates", "stat_matrix", "train_trees"]
