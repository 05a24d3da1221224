"""Dense-weight options of the trainer. train.lr_schedule: the dense (Adam) learning rate falls linearly from
dense_lr to 0 over train.epochs, the embedding (Adagrad) rate is left alone, ``constant`` changes nothing.
train.ema_decay: the saved weights are the moving average of the dense weights, the embedding table is the live
one, and resume restores the average."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pepnet.config import ModelConfig, TrainConfig
from pepnet.data.batches import TensorData
from pepnet.data.encoder import EncodedData
from pepnet.nn import ModelLayout, build_model
from pepnet.train.trainer import Trainer

N, BS, EPOCHS = 64, 16, 2  # 4 steps per epoch, 8 in all


def _tiny_trainer(tmp_path, **train):
    rng = np.random.default_rng(0)
    data = EncodedData(sparse=rng.integers(0, 5, (N, 2)), dense=rng.normal(size=(N, 1)).astype(np.float32),
                       labels=rng.integers(0, 2, (N, 2)).astype(np.float32), domain=np.zeros(N, np.int64),
                       user=np.arange(N), domain_names=["d"])
    layout = ModelLayout(num_embeddings=10, n_sparse=2, n_dense=1, tasks=("a", "b"),
                         groups={"general": [0, 1, 2], "domain_side": [0]})
    torch.manual_seed(0)
    model = build_model(layout, ModelConfig(embedding_dim=4, hidden_units=[8], gate_hidden=4))
    cfg = TrainConfig(epochs=EPOCHS, batch_size=BS, seed=7, progress=False, dense_lr=0.01, **train)
    return Trainer(model, cfg, ["a", "b"], run_dir=tmp_path, log=lambda _: None), TensorData(data)


def _recorded_rates(schedule: str, tmp_path) -> list[tuple[float, float]]:
    trainer, data = _tiny_trainer(tmp_path, embedding_lr=0.05, lr_schedule=schedule)
    seen: list[tuple[float, float]] = []
    real_step = trainer.step

    def recording(batch):
        adagrad, adam = trainer.optimizers
        assert isinstance(adam, torch.optim.Adam)
        seen.append((adam.param_groups[0]["lr"], adagrad.param_groups[0]["lr"]))
        return real_step(batch)

    trainer.step = recording
    trainer.fit(data)
    return seen


def test_linear_schedule_decays_the_dense_rate_only(tmp_path):
    seen = _recorded_rates("linear", tmp_path)
    steps = EPOCHS * (N // BS)
    assert [a for a, _ in seen] == pytest.approx([0.01 * (1 - k / steps) for k in range(steps)])
    assert all(e == 0.05 for _, e in seen)


def test_constant_schedule_keeps_dense_lr(tmp_path):
    assert {a for a, _ in _recorded_rates("constant", tmp_path)} == {0.01}


def test_ema_saves_the_moving_average_of_the_dense_weights(tmp_path):
    from pepnet.train.checkpoint import load_checkpoint
    from pepnet.train.trainer import BEST, CHECKPOINT

    decay = 0.8
    trainer, data = _tiny_trainer(tmp_path, ema_decay=decay)
    name, param = next((n, p) for n, p in trainer.model.named_parameters() if any(p is q for q in trainer.ema_params))
    expected = param.detach().clone()
    real_step = trainer.step

    def recording(batch):
        nonlocal expected
        step = trainer.state.step
        out = real_step(batch)
        d = min(decay, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * param.detach()
        return out

    trainer.step = recording
    trainer.fit(data)
    best = load_checkpoint(tmp_path / BEST)
    torch.testing.assert_close(best[name], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(best[name], param.detach())  # the model keeps training on its live weights
    # the embedding table (Adagrad) is not averaged: the saved table is the live one
    assert torch.equal(best["embedding.table.weight"], trainer.model.state_dict()["embedding.table.weight"])
    # resume restores the average
    again, _ = _tiny_trainer(tmp_path, ema_decay=decay)
    assert again.resume()
    for a, b in zip(again.ema, trainer.ema, strict=True):
        assert torch.equal(a, b)
    assert load_checkpoint(tmp_path / CHECKPOINT)["ema"]


def test_without_ema_the_saved_weights_are_the_live_ones(tmp_path):
    from pepnet.train.checkpoint import load_checkpoint
    from pepnet.train.trainer import BEST

    trainer, data = _tiny_trainer(tmp_path)
    trainer.fit(data)
    assert trainer.ema == []
    best = load_checkpoint(tmp_path / BEST)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(best[k], v), k


def test_weight_decay_reaches_the_dense_weights_only(tmp_path):
    """``train.weight_decay``: one step from the same weights on the same batch moves the dense (Adam) weights
    differently with decay than without, and leaves the embedding (Adagrad) step as it was."""
    after = {}
    for wd in (0.0, 0.5):
        trainer, data = _tiny_trainer(tmp_path / str(wd), weight_decay=wd)
        trainer.step(data.batch(slice(0, BS)))
        after[wd] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        assert trainer.optimizers[1].param_groups[0]["weight_decay"] == wd
    dense = [k for k in after[0.0] if not k.startswith("embedding.")]
    assert dense and all(not torch.equal(after[0.0][k], after[0.5][k]) for k in dense if "weight" in k)
    table = "embedding.table.weight"
    torch.testing.assert_close(after[0.0][table], after[0.5][table], rtol=0, atol=0)


def test_resume_refuses_a_checkpoint_with_other_optimiser_states(tmp_path):
    """Resume pairs every optimiser with its saved state strictly: a checkpoint holding fewer states (another
    config) is an error naming the file, not a silently half-restored run."""
    from pepnet.train.checkpoint import load_checkpoint, save_checkpoint
    from pepnet.train.trainer import CHECKPOINT, TrainingError

    trainer, data = _tiny_trainer(tmp_path)
    trainer.fit(data)
    ck = load_checkpoint(tmp_path / CHECKPOINT)
    save_checkpoint({**ck, "optimizers": ck["optimizers"][:1]}, tmp_path / CHECKPOINT)
    with pytest.raises(TrainingError, match=r"checkpoint.pt holds 1 optimiser state\(s\) .* this model has 2"):
        _tiny_trainer(tmp_path)[0].resume()
