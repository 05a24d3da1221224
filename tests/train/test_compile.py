"""train.compile on CPU: the embedding lookup (sparse row gradients, which inductor cannot compile) stays eager,
the dense part is compiled, and a compiled training step updates every weight exactly as the eager step does;
train.compile=auto compiles long runs and open-ended ones where a compiler exists, and nothing else."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pepnet.config import ModelConfig, TrainConfig
from pepnet.data.batches import TensorData
from pepnet.data.encoder import EncodedData
from pepnet.nn import ModelLayout, build_model
from pepnet.train import runtime
from pepnet.train.runtime import AUTO_COMPILE_STEPS, should_compile
from pepnet.train.trainer import Trainer

needs_compiler = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                    reason="torch.compile on CPU needs a C++ compiler")
N = 32


def _trainer(compile_: bool | str) -> tuple[Trainer, TensorData]:
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


@needs_compiler
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


@pytest.mark.parametrize("has_compiler", [True, False])
def test_auto_compiles_long_and_open_ended_runs_where_a_compiler_exists(monkeypatch, has_compiler):
    monkeypatch.setattr(runtime, "compiler_available", lambda device: has_compiler)
    cpu = torch.device("cpu")
    assert should_compile("auto", cpu, AUTO_COMPILE_STEPS) is has_compiler
    assert should_compile("auto", cpu, None) is has_compiler       # a benchmark's steady state
    assert should_compile("auto", cpu, AUTO_COMPILE_STEPS - 1) is False
    assert should_compile(True, cpu, 1) is True and should_compile(False, cpu, None) is False
    assert str(AUTO_COMPILE_STEPS) in TrainConfig.model_fields["compile"].description  # the documented threshold


def test_compiler_lookup_follows_cxx(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-pepnet")
    assert not runtime.compiler_available(torch.device("cpu"))
    monkeypatch.setenv("CXX", "sh")  # any program on PATH
    assert runtime.compiler_available(torch.device("cpu"))


def test_trainer_compile_for_applies_auto_only(monkeypatch):
    monkeypatch.setattr(runtime, "compiler_available", lambda device: True)
    trainer, _ = _trainer("auto")
    assert trainer.forward is trainer.model  # nothing decided before the run's length is known
    trainer.compile_for(10)
    assert trainer.forward is trainer.model
    trainer.compile_for(AUTO_COMPILE_STEPS)
    assert trainer.forward is not trainer.model  # torch.compile is lazy: nothing is compiled until called
    compiled = trainer.forward
    trainer.compile_for(None)
    assert trainer.forward is compiled  # compiled once
    off, _ = _trainer(False)
    off.compile_for(None)
    assert off.forward is off.model
    assert TrainConfig().compile == "auto"
