"""Training orchestration options no other test guards: ``train.monitor`` chooses the epoch."""
from __future__ import annotations

import numpy as np
import pytest

from pepnet.config import parse_config
from pepnet.prepare import prepare
from pepnet.run import train_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_monitor_picks_the_epoch_by_its_own_metric(tiny_config_tree, tmp_path):
    """``train.monitor: auc`` (the default is gauc): the kept epoch is the first with the best validation mean
    AUC, and the score recorded for it is that AUC."""
    tree = tiny_config_tree(epochs=3)
    tree["train"].update(monitor="auc", patience=5)
    cfg = parse_config(tree)
    state = train_model(cfg, prepare(cfg, log=lambda _: None), tmp_path / "run", log=lambda _: None).state
    auc = np.array([r["valid_mean_auc"] for r in state.history])
    gauc = np.array([r["valid_mean_gauc"] for r in state.history])
    assert len(auc) == 3 and not np.allclose(auc, gauc)
    assert state.best == auc.max() and state.best_epoch == int(np.argmax(auc)) + 1
