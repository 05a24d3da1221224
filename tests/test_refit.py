"""``train.refit``: the epoch is chosen on the validation split, then a fresh model is trained on training +
validation rows for that many epochs, with its own encoder, and that final model is what the run holds,
scores, serves and reports."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

import pepnet
from pepnet.config import parse_config
from pepnet.data.encoder import Encoder
from pepnet.data.sources import FILE_COL, ROW_COL, Frame, concat_frames
from pepnet.prepare import prepare
from pepnet.run import REFIT_DIR, Run
from pepnet.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory, tiny_config_tree):
    tree = tiny_config_tree(epochs=3)
    tree["train"].update(refit=True, patience=2)
    cfg = parse_config(tree)
    out = tmp_path_factory.mktemp("refit")
    lines: list[str] = []
    run = pepnet.fit(cfg, out=out, log=lines.append)
    return cfg, out, run, lines


def _valid_only_users(cfg) -> list:
    frames = prepare(cfg, log=lambda _: None).frames
    return sorted(set(frames["valid"].df["user_id"].to_list()) - set(frames["train"].df["user_id"].to_list()))


def test_final_model_is_trained_on_train_plus_valid_for_the_chosen_epochs(refit_run):
    cfg, out, run, lines = refit_run
    chosen = pl.read_csv(out / "history.csv")
    best_epoch = int(chosen["epoch"][int(np.argmax(chosen["valid_mean_gauc"].to_numpy()))])
    refit_history = pl.read_csv(out / REFIT_DIR / "history.csv")
    assert refit_history.height == best_epoch  # exactly the epochs chosen on validation, no validation metrics
    assert not any(c.startswith("valid_") for c in refit_history.columns)
    assert any("refit" in ln and f"{best_epoch} epoch" in ln for ln in lines)
    # the final encoder saw the validation rows: users first seen there have their own embedding rows
    selection = Encoder.load(out / "encoder")
    users = _valid_only_users(cfg)
    assert users, "the tiny data should have users first seen in the validation split"
    assert set(selection.vocabs["user_id"].to_list()).isdisjoint(users)
    assert set(users) <= set(run.encoder.vocabs["user_id"].to_list())


def test_load_evaluate_and_report_use_the_refit_model(refit_run):
    _, out, run, _ = refit_run
    loaded = Run.load(out)
    for (name, a), (_, b) in zip(run.model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    selection_weights = load_checkpoint(out / "model.pt")
    table = max(selection_weights, key=lambda k: selection_weights[k].numel())  # the fused embedding table
    assert selection_weights[table].shape[0] < loaded.model.state_dict()[table].shape[0]  # a larger vocabulary
    again = loaded.evaluate()  # the test split encoded as the refit model was scored in fit
    for task in run.encoder.task_names:
        assert again.get(task)["auc"] == pytest.approx(run.report.get(task)["auc"], abs=1e-9)
        assert again.get(task)["rows"] == run.report.get(task)["rows"]


def test_concat_frames_keeps_every_row_located_in_its_own_file():
    def frame(files, n):
        return Frame(pl.DataFrame({"x": list(range(n)), FILE_COL: pl.Series([0] * n, dtype=pl.UInt16),
                                   ROW_COL: pl.Series(range(n), dtype=pl.Int64)}), files)

    same = concat_frames(frame(["a.parquet"], 3), frame(["a.parquet"], 2))
    assert same.files == ["a.parquet"] and same.locate(4) == ("a.parquet", 1)
    other = concat_frames(frame(["train.parquet"], 3), frame(["valid.parquet"], 2))
    assert other.files == ["train.parquet", "valid.parquet"]
    assert other.locate(2) == ("train.parquet", 2) and other.locate(3) == ("valid.parquet", 0)
