"""Data preparation options no other test guards: ``split.test_stats``."""
from __future__ import annotations

import numpy as np
import pytest

from pepnet.config import parse_config
from pepnet.prepare import prepare

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _prep(tree_fn, test_stats: str):
    tree = tree_fn()
    tree["data"]["split"]["test_stats"] = test_stats
    return prepare(parse_config(tree), log=lambda _: None)


def test_test_stats_train_valid_lets_test_rows_count_the_validation_rows(tiny_config_tree):
    """``split.test_stats: train+valid``: the test split is encoded by an encoder whose statistics of the past
    also hold the validation rows; training and validation encodings stay those of ``train``."""
    only_train, with_valid = _prep(tiny_config_tree, "train"), _prep(tiny_config_tree, "train+valid")
    n_train, n_valid = (only_train.frames[k].df.height for k in ("train", "valid"))
    assert only_train.test_encoder is None and with_valid.test_encoder is not None
    for stat in ("domain_click", "user_click"):
        assert int(only_train.encoder.past.tables[stat]["n"].sum()) == n_train
        assert int(with_valid.encoder_for("test").past.tables[stat]["n"].sum()) == n_train + n_valid
    for split in ("train", "valid"):
        np.testing.assert_array_equal(with_valid.encoded[split].sparse, only_train.encoded[split].sparse)
        np.testing.assert_array_equal(with_valid.encoded[split].dense, only_train.encoded[split].dense)
    # the test rows' statistics (sparse buckets: domain_click and user_click are sparse fields) changed
    assert (with_valid.encoded["test"].sparse != only_train.encoded["test"].sparse).any()
    test_df = with_valid.frames["test"].df
    values = with_valid.test_encoder.past.values(test_df)[1]
    assert not np.array_equal(values, only_train.encoder.past.values(test_df)[1])
