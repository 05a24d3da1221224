"""train.compile on CPU: the embedding lookup (sparse row gradients, which inductor cannot compile) stays eager,
the dense part is compiled, and a compiled training step updates every weight exactly as the eager step does."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pepnet.config import ModelConfig, TrainConfig
from pepnet.data.batches import TensorData
from pepnet.data.encoder import EncodedData
from pepnet.nn import ModelLayout, build_model
from pepnet.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                reason="torch.compile on CPU needs a C++ compiler")
N = 32


def _trainer(compile_: bool) -> tuple[Trainer, TensorData]:
    rng = np.random.default_rng(0)
    data = EncodedData(sparse=np.stack([rng.integers(0, 3, N), rng.integers(3, 9, N)], 1),
                       dense=rng.normal(size=(N, 1)).astype(np.float32),
                       labels=rng.integers(0, 2, (N, 2)).astype(np.float32), domain=np.zeros(N, np.int64),
                       user=np.arange(N), domain_names=["d"])
    layout = ModelLayout(num_embeddings=9, n_sparse=2, n_dense=1, tasks=("a", "b"),
                         groups={"general": [0, 1, 2], "domain_side": [0], "user_prior": [1]})
    torch.manual_seed(0)
    model = build_model(layout, ModelConfig(embedding_dim=4, hidden_units=[8, 4], gate_hidden=4))
    cfg = TrainConfig(epochs=1, batch_size=N, progress=False, compile=compile_, threads=1)
    return Trainer(model, cfg, ["a", "b"], log=lambda _: None), TensorData(data)


def test_compiled_steps_match_eager_steps():
    (eager, data), (compiled, _) = _trainer(False), _trainer(True)
    assert compiled.forward is not compiled.model  # the compiled view is what the step calls
    batch = data.batch(slice(0, N))
    for _ in range(2):
        assert compiled.step(batch) == pytest.approx(eager.step(batch), rel=1e-5)
    before = _trainer(False)[0].model.state_dict()
    for name, p in eager.model.state_dict().items():
        q = compiled.model.state_dict()[name]
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)
        if p.is_floating_point() and name.startswith("embedding.table"):
            assert not torch.equal(p, before[name])  # the eager lookup's sparse gradient reached Adagrad
