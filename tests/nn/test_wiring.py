"""Wiring of PEPNet: the bugs peers shipped (prior embeddings without gradient, towers sharing weights,
EPNet/PPNet swapped, gates leaking gradient into the general embeddings) must be absent.

The tiny layout (tests/conftest.py) has disjoint groups: general = sparse fields 0, 1 and the dense
field; domain_side = field 2; user / item / author prior = fields 3 / 4 / 5.
"""
from __future__ import annotations

import pytest
import torch

from pepnet.nn import EPNet, PPNet, TaskTowers
from pepnet.train.loss import masked_bce

GENERAL, DOMAIN, USER, ITEM, AUTHOR = (0, 1), 2, 3, 4, 5
VARIANTS = [
    {},
    {"ppnet_gate_mode": "per_task"},
    {"ppnet_gate_on": "output"},
    {"epnet_granularity": "field"},
    {"stop_gradient": False},
    {"ppnet_gate_output_layer": True},
]


def _labels(n: int, t: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (n, t), generator=torch.Generator().manual_seed(seed)).float()


def _grad_dense(p: torch.nn.Parameter) -> torch.Tensor:
    return p.grad.to_dense() if p.grad.is_sparse else p.grad


def _backward(model, sparse, dense, labels=None) -> None:
    model.zero_grad(set_to_none=True)
    logits = model(sparse, dense)
    masked_bce(logits, labels if labels is not None else _labels(len(sparse)))[0].backward()


def _capture_epnet(model) -> dict:
    """Record O_ep and delta_domain on every forward (a hook on the EPNet module)."""
    seen: dict = {}
    model.epnet.register_forward_hook(
        lambda m, i, o: seen.update(o_ep=o[0].detach().clone(), delta=o[1].detach().clone()))
    return seen


def _gates(model):
    return [model.epnet.gate, *model.ppnet.gates]


def _cut(gate) -> None:
    """Cut a Gate NU's outputs off the graph, both ways they are read: ``forward`` (EPNet) and ``parts`` (PPNet's
    towers, one task's part at a time)."""
    gate.register_forward_hook(lambda m, i, o: o.detach())
    gate.parts = lambda x, n, const=None, only=None, f=gate.parts: {
        s: (lambda p=p: p().detach()) for s, p in f(x, n, const, only).items()}


# ----------------------------------------------------------------------------- gradients reach everything


@pytest.mark.parametrize("options", VARIANTS)
def test_every_parameter_gets_a_gradient(tiny, options):
    model = tiny.model(**options)
    sparse, dense = tiny.batch(64)
    _backward(model, sparse, dense)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert _grad_dense(p).abs().sum() > 0, f"{name} got an all-zero gradient"
    # every used row of the fused table learns, in particular those of the prior-only fields
    grad = _grad_dense(model.embedding.table.weight)
    for field in range(6):
        used = sparse[:, field].unique()
        assert torch.all(grad[used].abs().sum(1) > 0), f"rows of field {field} used by the batch got no gradient"


def test_prior_embeddings_learn_only_through_the_ppnet_gates(tiny):
    """The prior fields are in no other group, so their gradient must come from PPNet's gates; cutting
    the gates' outputs off the graph leaves them with none (so the test above is not vacuous)."""
    model = tiny.model()
    sparse, dense = tiny.batch(64)
    for g in model.ppnet.gates:
        _cut(g)
    _backward(model, sparse, dense)
    grad = _grad_dense(model.embedding.table.weight)
    for field in (USER, ITEM, AUTHOR):
        assert torch.all(grad[tiny.rows(field)] == 0)
    assert grad[tiny.rows(GENERAL[0])].abs().sum() > 0


# ----------------------------------------------------------------------------- stop-gradient


def _general_grads(tiny, stop_gradient: bool, cut_gates: bool):
    model = tiny.model(stop_gradient=stop_gradient)
    sparse, dense = tiny.batch(64)
    if cut_gates:
        for g in _gates(model):
            _cut(g)
    _backward(model, sparse, dense)
    table = _grad_dense(model.embedding.table.weight)
    return torch.cat([table[tiny.rows(f)] for f in GENERAL]), model.embedding.dense_vectors.grad.clone()


def test_stop_gradient_gates_send_nothing_into_general_embeddings(tiny):
    """With stop_gradient the gradient of E is exactly the one through delta * E and the towers: cutting
    every gate output off the graph changes nothing. Without it, the gates add their own gradient."""
    on_rows, on_dense = _general_grads(tiny, True, cut_gates=False)
    cut_rows, cut_dense = _general_grads(tiny, True, cut_gates=True)
    torch.testing.assert_close(on_rows, cut_rows, rtol=0, atol=0)
    torch.testing.assert_close(on_dense, cut_dense, rtol=0, atol=0)
    assert on_rows.abs().sum() > 0

    off_rows, off_dense = _general_grads(tiny, False, cut_gates=False)
    off_cut_rows, _ = _general_grads(tiny, False, cut_gates=True)
    torch.testing.assert_close(off_cut_rows, cut_rows)  # same model apart from the gates' input
    assert (off_rows - off_cut_rows).abs().max() > 1e-6
    assert (off_dense - on_dense).abs().max() > 1e-6


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_epnet_gate_path_into_E(stop_gradient):
    torch.manual_seed(0)
    ep = EPNet(n_general=3, n_domain=2, dim=4, hidden=8, stop_gradient=stop_gradient)
    general = torch.randn(10, 3, 4, requires_grad=True)
    domain = torch.randn(10, 2, 4, requires_grad=True)
    w = torch.randn(10, 3, 4)
    o_ep, delta = ep(general, domain)
    (o_ep * w).sum().backward()
    direct = delta.detach() * w  # d/dE of sum(delta * E * w) with delta held fixed
    if stop_gradient:
        torch.testing.assert_close(general.grad, direct)
    else:
        assert (general.grad - direct).abs().max() > 1e-6
    assert domain.grad.abs().sum() > 0  # the domain-side embeddings learn through the gate either way


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_ppnet_gate_path_into_O_ep(stop_gradient):
    torch.manual_seed(0)
    pp = PPNet(in_dim=12, prior_dim=8, hidden_units=[6, 5], n_tasks=2, gate_hidden=8, stop_gradient=stop_gradient)
    o_ep = torch.randn(10, 12, requires_grad=True)
    prior = torch.randn(10, 8, requires_grad=True)
    logits, deltas = pp(o_ep, prior, with_gates=True)
    logits.sum().backward()
    o_ep2 = o_ep.detach().clone().requires_grad_(True)
    pp.towers(o_ep2, lambda layer, t: deltas[layer][:, t].detach()).sum().backward()  # the tower path alone
    if stop_gradient:
        torch.testing.assert_close(o_ep.grad, o_ep2.grad)
    else:
        assert (o_ep.grad - o_ep2.grad).abs().max() > 1e-6
    assert prior.grad.abs().sum() > 0  # prior features are never detached


# ----------------------------------------------------------------------------- towers


@pytest.mark.parametrize("options", [{}, {"ppnet_gate_mode": "per_task"}, {"name": "epnet_only"}])
def test_a_loss_on_task_0_trains_only_tower_0(tiny, options):
    model = tiny.model(**options)
    towers = model.ppnet.towers if model.ppnet is not None else model.towers
    sparse, dense = tiny.batch(64)
    labels = _labels(64)
    labels[:, 1] = float("nan")
    _backward(model, sparse, dense, labels)
    params = dict(towers.named_parameters())
    assert len(params) == 2 * 2 + 2  # two hidden layers (weight, bias) + output layer
    for name, p in params.items():
        assert p.shape[0] == 2, name
        assert p.grad[0].abs().sum() > 0, f"{name}: tower 0 got no gradient"
        assert torch.all(p.grad[1] == 0), f"{name}: tower 1 got a gradient from task 0's loss"


def test_towers_share_no_parameter(tiny):
    model = tiny.model()
    towers = model.ppnet.towers
    ids = [id(p) for _, p in model.named_parameters(remove_duplicate=False)]
    assert len(ids) == len(set(ids)), "a parameter object is registered twice"
    for name, p in towers.named_parameters():
        # slice t of a stacked weight is tower t's own memory: no broadcast / expand (stride 0) sharing
        assert p.stride(0) >= p[0].numel(), name
        assert p[0].data_ptr() != p[1].data_ptr(), name
    # perturbing tower 1 leaves task 0's logit untouched and moves task 1's
    sparse, dense = tiny.batch(32)
    model.eval()
    with torch.no_grad():
        before = model(sparse, dense)
        for p in towers.parameters():
            p[1].add_(0.5)
        after = model(sparse, dense)
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-4


def test_task_towers_are_independent_mlps():
    """Tower t of TaskTowers equals a plain MLP built from slice t of each weight."""
    torch.manual_seed(0)
    towers = TaskTowers(7, [5, 3], n_tasks=3)
    x = torch.randn(4, 7)
    out = towers(x)
    for t in range(3):
        h = x
        for w, b in zip(towers.weights, towers.biases, strict=True):
            h = torch.relu(h @ w[t] + b[t])
        torch.testing.assert_close(out[:, t], (h @ towers.out_weight[t] + towers.out_bias[t]).squeeze(-1))


# ----------------------------------------------------------------------------- which input drives which net


def test_domain_drives_epnet_and_priors_drive_ppnet(tiny):
    model = tiny.model().eval()
    seen = _capture_epnet(model)
    sparse, dense = tiny.batch(32)
    with torch.no_grad():
        logits, gates = model.forward_with_gates(sparse, dense)
        o_ep, delta = seen["o_ep"], seen["delta"]

        other_domain = sparse.clone()
        start = tiny.rows(DOMAIN).start
        other_domain[:, DOMAIN] = start + (sparse[:, DOMAIN] - start) % (tiny.VOCAB - 1) + 1
        assert torch.all(other_domain[:, DOMAIN] != sparse[:, DOMAIN])
        logits_d, _ = model.forward_with_gates(other_domain, dense)
        changed = (seen["o_ep"] - o_ep).abs().amax(dim=(1, 2))
        assert changed.min() > 1e-6, "changing the domain must change O_ep of every row"
        assert (logits_d - logits).abs().max() > 1e-6

        for field in (USER, ITEM, AUTHOR):
            other_prior = sparse.clone()
            start = tiny.rows(field).start
            other_prior[:, field] = start + (sparse[:, field] - start) % (tiny.VOCAB - 1) + 1
            logits_p, gates_p = model.forward_with_gates(other_prior, dense)
            torch.testing.assert_close(seen["o_ep"], o_ep, rtol=0, atol=0)   # EPNet does not read priors
            torch.testing.assert_close(seen["delta"], delta, rtol=0, atol=0)
            changed = (logits_p - logits).abs().amax(dim=1)
            assert changed.min() > 1e-7, f"prior field {field} must change every row's logits"
            for layer in range(len(model.ppnet.gates)):
                assert (gates_p[f"ppnet.{layer}"] - gates[f"ppnet.{layer}"]).abs().max() > 1e-6


def test_epnet_scales_embeddings_and_ppnet_scales_tower_layers(tiny):
    model = tiny.model().eval()
    seen = _capture_epnet(model)
    sparse, dense = tiny.batch(8)
    d = model.embedding.dim
    with torch.no_grad():
        _, gates = model.forward_with_gates(sparse, dense)
        emb = model.embedding(sparse, dense)
    general = emb[:, list(tiny.GROUPS["general"])]
    # EPNet: one gate value per element of the general embeddings E [B, Fg, d], and O_ep = delta * E
    assert gates["epnet"].shape == general.shape == (8, 3, d)
    torch.testing.assert_close(seen["o_ep"], gates["epnet"] * general)
    # its gate reads E(F_d) ++ E: 1 domain-side field + 3 general fields
    assert model.epnet.gate.in_dim == (1 + 3) * d
    # PPNet: one gate per tower layer, [B, T, width of that layer's input], read from priors ++ O_ep
    hidden = [8, 6]
    widths = [3 * d, hidden[0]]
    assert [gates[f"ppnet.{i}"].shape for i in range(2)] == [(8, 2, w) for w in widths]
    assert all(g.in_dim == (3 + 3) * d for g in model.ppnet.gates)
    assert [w.shape[1] for w in model.ppnet.towers.weights] == widths


def test_ablations_drop_the_right_net(tiny):
    sparse, dense = tiny.batch(8)
    ppnet_only = tiny.model(name="ppnet_only").eval()
    epnet_only = tiny.model(name="epnet_only").eval()
    assert ppnet_only.epnet is None and ppnet_only.ppnet is not None
    assert epnet_only.ppnet is None and epnet_only.epnet is not None
    with torch.no_grad():
        _, g = ppnet_only.forward_with_gates(sparse, dense)
        assert "epnet" not in g and "ppnet.0" in g
        _, g = epnet_only.forward_with_gates(sparse, dense)
        assert list(g) == ["epnet"]


# ----------------------------------------------------------------------------- optimisers


def test_embeddings_get_adagrad_and_everything_else_adam(tiny):
    from pepnet.config import TrainConfig
    from pepnet.train.optim import make_optimizers

    model = tiny.model()
    adagrad, adam = make_optimizers(model, TrainConfig(embedding_lr=0.1, dense_lr=0.01))
    assert isinstance(adagrad, torch.optim.Adagrad) and isinstance(adam, torch.optim.Adam)
    emb = {id(p) for g in adagrad.param_groups for p in g["params"]}
    dense = {id(p) for g in adam.param_groups for p in g["params"]}
    assert emb == {id(model.embedding.table.weight), id(model.embedding.dense_vectors)}
    assert not emb & dense and emb | dense == {id(p) for p in model.parameters()}
    assert adam.defaults["fused"]  # torch's one-kernel Adam on CPU (and CUDA): the same update, ~4x cheaper
    ref = torch.optim.Adam([torch.nn.Parameter(p.detach().clone()) for p in adam.param_groups[0]["params"]], lr=0.01)
    for opt in (adam, ref):
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        opt.step()
    for p, q in zip(adam.param_groups[0]["params"], ref.param_groups[0]["params"], strict=True):
        torch.testing.assert_close(p, q)  # the same update as the default implementation


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # torch's Adagrad on sparse grads
def test_one_training_step_moves_prior_only_embedding_rows(tiny):
    from pepnet.config import TrainConfig
    from pepnet.data.batches import Batch
    from pepnet.train.trainer import Trainer

    model = tiny.model()
    sparse, dense = tiny.batch(64)
    before = model.embedding.table.weight.detach().clone()
    trainer = Trainer(model, TrainConfig(progress=False, device="cpu"), list(tiny.TASKS), log=lambda _: None)
    assert trainer.step(Batch(sparse, dense, _labels(64))) is not None
    moved = (model.embedding.table.weight.detach() - before).abs().sum(1) > 0
    for field in (USER, ITEM, AUTHOR, DOMAIN, *GENERAL):
        used = sparse[:, field].unique()
        assert torch.all(moved[used]), f"rows of field {field} used by the batch did not move"
    unused = torch.ones(len(moved), dtype=torch.bool)
    unused[sparse.unique()] = False
    assert not torch.any(moved[unused])  # row-wise (sparse) updates: rows outside the batch stay put


@pytest.mark.parametrize("gate_mode", ["split", "per_task"])
def test_ppnet_gate_slice_t_scales_tower_t_only(gate_mode):
    """Each layer's gate output viewed as [B, T, w]: slice t multiplies task t's tower and no other. Zeroing one
    task's slice of the first layer's gate changes that task's logit only, for every task."""
    torch.manual_seed(0)
    ppnet = PPNet(in_dim=6, prior_dim=4, hidden_units=[5, 3], n_tasks=3, gate_hidden=4, gate_mode=gate_mode).eval()
    o_ep, prior = torch.randn(16, 6), torch.randn(16, 4)
    gate = ppnet.gates[0]
    with torch.no_grad():
        base, deltas = ppnet(o_ep, prior, with_gates=True)
        torch.testing.assert_close(deltas[0], gate(torch.cat([prior, o_ep], 1)).view(16, 3, -1))  # the [B, T, w] view
        for t in range(3):
            parts = gate.parts  # zero task t's slice:
            gate.parts = lambda x, n, c=None, only=None, t=t, parts=parts: {
                s: (lambda p=p, s=s: p() * (s != t)) for s, p in parts(x, n, c, only).items()}
            logits, _ = ppnet(o_ep, prior)
            del gate.parts
            others = [k for k in range(3) if k != t]
            torch.testing.assert_close(logits[:, others], base[:, others], rtol=0, atol=0)
            assert (logits[:, t] - base[:, t]).abs().max() > 1e-4, f"task {t}'s slice does not reach tower {t}"


def test_ppnet_gate_output_layer_scales_the_input_of_each_tasks_output_layer(tiny):
    """``ppnet_gate_output_layer``: one more PPNet gate, [B, T, hidden_units[-1]], multiplies the last hidden
    layer's output before each task's output layer; gate_on=output already gates it, so nothing is added there."""
    model = tiny.model(ppnet_gate_output_layer=True).eval()
    towers = model.ppnet.towers
    assert len(model.ppnet.gates) == 3 and towers.gate_widths == [3 * 4, 8, 6]
    seen = _capture_epnet(model)
    sparse, dense = tiny.batch(8)
    with torch.no_grad():
        logits, gates = model.forward_with_gates(sparse, dense)
        assert gates["ppnet.2"].shape == (8, 2, 6)
        # rebuild the logits from the towers' weights: every hidden layer's input gated, then the output layer's
        h = seen["o_ep"].flatten(1).unsqueeze(0).expand(2, -1, -1)
        for layer, (w, b) in enumerate(zip(towers.weights, towers.biases, strict=True)):
            h = torch.relu(torch.baddbmm(b, h * gates[f"ppnet.{layer}"].transpose(0, 1), w))
        gated = torch.baddbmm(towers.out_bias, h * gates["ppnet.2"].transpose(0, 1), towers.out_weight)
        torch.testing.assert_close(logits, gated.squeeze(-1).transpose(0, 1))
        ungated = torch.baddbmm(towers.out_bias, h, towers.out_weight).squeeze(-1).transpose(0, 1)
        assert (logits - ungated).abs().max() > 1e-4
    assert len(tiny.model(ppnet_gate_output_layer=True, ppnet_gate_on="output").ppnet.gates) == 2
    assert len(tiny.model().ppnet.gates) == 2


@pytest.mark.parametrize("options", VARIANTS)
def test_every_gradient_has_its_parameters_layout(tiny, options):
    """DDP copies each gradient into a bucket view laid out like its parameter; a gradient with other strides
    (e.g. from a permuted view of the weight) costs a copy and a warning on every step."""
    model = tiny.model(**options)
    _backward(model, *tiny.batch(32))
    bad = [(name, p.stride(), p.grad.stride()) for name, p in model.named_parameters()
           if not p.grad.is_sparse and p.grad.stride() != p.stride()]
    assert not bad, bad
