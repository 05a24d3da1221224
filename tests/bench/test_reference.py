"""The bench's reference implementation computes the same function as our PEPNet (weights copied across),
so `pepnet bench` compares speed alone; our embedding table produces row-wise gradients and updates."""
from __future__ import annotations

import pytest
import torch

from pepnet.bench.reference import ReferencePEPNet, ReferenceTrainer, copy_weights, local_ids, shuffled_batches
from pepnet.config import ModelConfig
from pepnet.data.encoder import FieldInfo
from pepnet.nn import ModelLayout, build_model
from pepnet.train.loss import masked_bce

SIZES = [7, 11, 3, 13, 5, 9]           # rows per sparse field (fused table = their sum)
FIELDS = [FieldInfo(f"s{i}", "sparse", n, sum(SIZES[:i])) for i, n in enumerate(SIZES)]
LAYOUT = ModelLayout(num_embeddings=sum(SIZES), n_sparse=6, n_dense=2, tasks=("a", "b", "c"),
                     groups={"general": [0, 1, 2, 3, 6, 7], "domain_side": [2, 6], "user_prior": [3, 4],
                             "item_prior": [5], "author_prior": [1]})


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    local = torch.stack([torch.randint(0, s, (n,), generator=g) for s in SIZES], dim=1)
    return local + torch.tensor([f.offset for f in FIELDS]), torch.randn(n, 2, generator=g)


def pair(**options) -> tuple[torch.nn.Module, ReferencePEPNet, ModelConfig]:
    torch.manual_seed(1)
    cfg = ModelConfig(**{"embedding_dim": 4, "hidden_units": [10, 6], "gate_hidden": 5, **options})
    fast = build_model(LAYOUT, cfg)
    ref = ReferencePEPNet(SIZES, LAYOUT, cfg)
    copy_weights(fast, ref, FIELDS)
    return fast, ref, cfg


@pytest.mark.parametrize("options", [
    {},
    {"ppnet_gate_mode": "per_task"},
    {"ppnet_gate_on": "output"},
    {"epnet_granularity": "field"},
    {"name": "epnet_only"},
    {"name": "ppnet_only"},
    {"ppnet_priors": ["user_prior"], "gamma": 1.5},
    # the matched config of issue 20: five layers, gates on layer outputs, one gate per task, dropout
    {"hidden_units": [12, 8, 8, 6, 4], "ppnet_gate_on": "output", "ppnet_gate_mode": "per_task", "gate_hidden": 7,
     "dropout": 0.1},
    {"dropout": 0.3, "ppnet_gate_on": "output"},
])
def test_same_outputs_for_same_weights(options):
    fast, ref, _ = pair(**options)
    fast.eval(), ref.eval()  # dropout off: the same function
    sparse, dense = batch()
    local = torch.from_numpy(local_ids(sparse.numpy(), FIELDS))
    out_fast, out_ref = fast(sparse, dense), ref(local, dense)
    assert out_fast.shape == (32, 3)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-5, atol=1e-6)
    # the outputs depend on the inputs (a constant model would pass the check above trivially)
    assert out_fast.std(0).max() > 1e-4


def test_same_gradients_and_one_training_step():
    fast, ref, _ = pair()
    sparse, dense = batch(64, seed=3)
    labels = torch.randint(0, 2, (64, 3)).float()
    labels[::5, 1] = float("nan")
    local = torch.from_numpy(local_ids(sparse.numpy(), FIELDS))
    masked_bce(fast(sparse, dense), labels)[0].backward()
    masked_bce(ref(local, dense), labels)[0].backward()
    g_fast = fast.embedding.table.weight.grad.to_dense()
    for f, emb in zip(FIELDS, ref.embeddings, strict=True):
        assert emb.weight.grad.is_sparse  # nn.Embedding(sparse=True), as industrial peers train it
        torch.testing.assert_close(g_fast[f.offset:f.offset + f.size], emb.weight.grad.to_dense(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast.ppnet.towers.weights[0].grad[2], ref.towers[2][0].weight.grad.t(),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast.ppnet.gates[1].w2.grad[0], ref.ppnet_gates[1][0].net[2].weight.grad.t(),
                               rtol=1e-4, atol=1e-6)


def test_reference_trainer_learns_from_in_memory_batches():
    _, ref, _ = pair(dropout=0.1)
    sparse, dense = batch(96, seed=4)
    labels = (dense[:, :1] > 0).float().repeat(1, 3)
    local = torch.from_numpy(local_ids(sparse.numpy(), FIELDS))
    batches = shuffled_batches((local, dense, labels), 32, seed=0)
    first = [next(batches) for _ in range(3)]                  # one epoch: every row once
    assert sorted(torch.cat([b[2][:, 0] for b in first]).tolist()) == sorted(labels[:, 0].tolist())
    trainer = ReferenceTrainer(ref, 0.05, 1e-2, torch.device("cpu"))
    assert isinstance(trainer.optimizers[0], torch.optim.Adagrad)
    losses = [trainer.step(next(batches)) for _ in range(60)]
    assert sum(losses[-6:]) < 0.8 * sum(losses[:6])


def test_table_gradient_is_row_wise_and_adagrad_touches_only_batch_rows():
    fast, _, _ = pair()
    sparse, dense = batch(8)
    before = fast.embedding.table.weight.detach().clone()
    opt = torch.optim.Adagrad(fast.embedding_parameters(), lr=0.1)
    fast(sparse, dense).sum().backward()
    grad = fast.embedding.table.weight.grad
    assert grad.is_sparse                                     # no dense [rows, d] gradient is materialised
    assert grad._nnz() <= sparse.numel()
    opt.step()
    changed = (fast.embedding.table.weight.detach() != before).any(1)
    used = torch.zeros(LAYOUT.num_embeddings, dtype=torch.bool)
    used[sparse.flatten()] = True
    assert changed.any() and not (changed & ~used).any()      # only looked-up rows moved
