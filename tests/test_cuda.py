"""CUDA paths (skipped without a GPU): the same model gives the same outputs on GPU, bf16 autocast
trains, the prefetching loader delivers the right rows on the device, data can live on the device."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pepnet.config import ModelConfig, TrainConfig
from pepnet.data.batches import BatchLoader, Prefetcher, TensorData
from pepnet.data.encoder import EncodedData
from pepnet.nn import ModelLayout, build_model
from pepnet.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LAYOUT = ModelLayout(num_embeddings=60, n_sparse=4, n_dense=1, tasks=("a", "b"),
                     groups={"general": [0, 1, 4], "domain_side": [2], "user_prior": [3], "item_prior": [1],
                             "author_prior": []})
CFG = ModelConfig(embedding_dim=8, hidden_units=[32, 16], gate_hidden=8)


def data(n: int = 2048, seed: int = 0) -> TensorData:
    rng = np.random.default_rng(seed)
    sparse = rng.integers(0, 15, (n, 4)) + np.arange(4) * 15
    dense = rng.standard_normal((n, 1)).astype(np.float32)
    labels = (rng.random((n, 2)) < 1 / (1 + np.exp(-3 * dense))).astype(np.float32)
    labels[::7, 1] = np.nan
    return TensorData(EncodedData(sparse.astype(np.int64), dense, labels, np.zeros(n, np.int64),
                                  np.arange(n) % 50, ["0"]))


def test_same_outputs_on_gpu_and_cpu():
    torch.manual_seed(0)
    model = build_model(LAYOUT, CFG)
    b = data(256).batch(slice(None))
    cpu = model(b.sparse, b.dense)
    gpu = model.cuda()(b.sparse.cuda(), b.dense.cuda())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options", [{"amp": "bf16"}, {"amp": "bf16", "data_on_device": True}, {"prefetch": 0}])
def test_training_on_gpu_lowers_the_loss(options):
    torch.manual_seed(0)
    model = build_model(LAYOUT, CFG)
    cfg = TrainConfig(epochs=4, batch_size=256, dense_lr=3e-3, progress=False, device="cuda", **options)
    trainer = Trainer(model, cfg, ["a", "b"], log=lambda _: None)
    state = trainer.fit(data())
    losses = [h["train_loss"] for h in state.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert model.embedding.table.weight.is_cuda and model.embedding.table.weight.grad.is_sparse


def test_bf16_autocast_runs_matmuls_in_bf16_and_stays_close():
    torch.manual_seed(0)
    model = build_model(LAYOUT, CFG).cuda()
    b = data(512).batch(slice(None)).to("cuda")
    ref = model(b.sparse, b.dense)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = model(b.sparse, b.dense)
    assert low.dtype == torch.bfloat16
    rel = (low.float() - ref).norm() / ref.norm()
    assert 0 < rel < 3e-2


def test_prefetcher_delivers_the_loader_batches_on_the_device():
    d = data(1000)
    loader = BatchLoader(d, 128, shuffle=True, seed=3)
    expected = [b.sparse for b in loader]
    got = list(Prefetcher(loader, torch.device("cuda"), depth=2))
    assert len(got) == len(expected) == 8
    for g, e in zip(got, expected, strict=True):
        assert g.sparse.is_cuda and torch.equal(g.sparse.cpu(), e)


def test_fast_and_reference_agree_on_gpu():
    from pepnet.bench.reference import ReferencePEPNet, copy_weights, local_ids
    from pepnet.data.encoder import FieldInfo

    torch.manual_seed(0)
    fields = [FieldInfo(f"s{i}", "sparse", 15, 15 * i) for i in range(4)]
    fast = build_model(LAYOUT, CFG).cuda()
    ref = ReferencePEPNet([15] * 4, LAYOUT, CFG)
    copy_weights(fast, ref, fields)
    ref.cuda()
    b = data(256).batch(slice(None))
    local = torch.from_numpy(local_ids(b.sparse.numpy(), fields)).cuda()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.testing.assert_close(fast(b.sparse.cuda(), b.dense.cuda()), ref(local, b.dense.cuda()), rtol=1e-4, atol=1e-5)


def test_rowwise_adagrad_matches_torch_adagrad_on_gpu():
    from pepnet.train.sparse_adagrad import RowWiseAdagrad

    torch.manual_seed(0)
    a = torch.nn.Embedding(1000, 8, sparse=True).cuda()
    b = torch.nn.Embedding(1000, 8, sparse=True).cuda()
    b.load_state_dict(a.state_dict())
    oa, ob = torch.optim.Adagrad(a.parameters(), lr=0.1), RowWiseAdagrad(b.parameters(), lr=0.1)
    for _ in range(3):
        ids = torch.randint(0, 200, (4096,), device="cuda")
        for emb, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            emb(ids).pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(b.weight, a.weight, rtol=1e-5, atol=1e-6)
