"""Baselines (Shared-Bottom, MMoE, PLE, STAR) and PEPNet's ablation flags: shapes, gradients, gates, domains."""
from __future__ import annotations

import pytest
import torch

from pepnet.config import ModelConfig
from pepnet.nn import MODELS, ModelLayout, build_model
from pepnet.nn.baselines.star import domain_index

N_DOMAINS, DOMAIN_OFFSET = 3, 20
LAYOUT = ModelLayout(
    num_embeddings=30, n_sparse=3, n_dense=2, tasks=("click", "like"),
    groups={"general": [0, 1, 2, 3, 4], "domain_side": [2], "user_prior": [0], "item_prior": [1], "author_prior": [3]},
    n_domains=N_DOMAINS, domain_field=2, domain_offset=DOMAIN_OFFSET,
)
NN_MODELS = ["shared_bottom", "mmoe", "ple", "star", "epnet_only", "ppnet_only", "pepnet"]


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(1, 10, (n,), generator=g)
    items = torch.randint(10, 20, (n,), generator=g)
    domains = torch.arange(n) % (N_DOMAINS + 1) + DOMAIN_OFFSET  # every domain, the unseen one (0) included
    return torch.stack([users, items, domains], 1), torch.randn(n, 2, generator=g)


def cfg(name: str, **kw) -> ModelConfig:
    return ModelConfig(**{"name": name, "embedding_dim": 4, "hidden_units": [8, 6], "gate_hidden": 5, **kw})


def test_all_models_registered():
    assert set(NN_MODELS) <= set(MODELS)


def test_register_adds_a_model_that_build_model_builds(monkeypatch):
    """``register`` (public API): a model registered under a new name is built by ``build_model`` with the
    layout and config it is given, and the name is then accepted."""
    from pepnet.nn import registry

    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))  # leave the real registry as it was
    seen = []

    def builder(layout: ModelLayout, config: ModelConfig) -> torch.nn.Module:
        seen.append((layout, config.name))
        return torch.nn.Linear(layout.n_sparse + layout.n_dense, layout.n_tasks)

    with pytest.raises(ValueError, match="'mine' is unknown"):
        build_model(LAYOUT, cfg("mine"))
    registry.register("mine", builder)
    model = build_model(LAYOUT, cfg("mine"))
    assert isinstance(model, torch.nn.Linear) and model.out_features == 2
    assert seen == [(LAYOUT, "mine")] and "mine" in registry.MODELS


@pytest.mark.parametrize("name", NN_MODELS)
def test_forward_shapes_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(LAYOUT, cfg(name))
    sparse, dense = batch()
    logits = model(sparse, dense)
    assert logits.shape == (32, 2) and torch.isfinite(logits).all()
    logits.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} gets no gradient"
        g = p.grad.coalesce().values() if p.grad.is_sparse else p.grad
        assert g.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"
    emb_ids = {id(p) for p in model.embedding_parameters()}
    assert emb_ids and emb_ids <= {id(p) for p in model.parameters()}
    model.eval()
    assert model(sparse, dense).shape == (32, 2)


@pytest.mark.parametrize("name", ["shared_bottom", "mmoe", "ple", "star"])
def test_baselines_read_fields_that_only_a_prior_group_holds(name):
    """The user id (field 0) only in user_prior: a baseline still reads it (it has no gate to feed it to)."""
    layout = ModelLayout(**{**LAYOUT.__dict__, "groups": {**LAYOUT.groups, "general": [1, 2, 3, 4]}})
    torch.manual_seed(0)
    model = build_model(layout, cfg(name)).eval()
    assert model.input.fields.fields == (1, 2, 3, 4, 0)
    sparse, dense = batch()
    other = sparse.clone()
    other[:, 0] = sparse[:, 0] % 9 + 1  # another known user on every row
    with torch.no_grad():
        assert not torch.allclose(model(sparse, dense), model(other, dense))


@pytest.mark.parametrize("name,options", [("mmoe", {"n_experts": 3}),
                                          ("ple", {"n_levels": 2, "task_experts": 2, "shared_experts": 2})])
def test_gate_weights_sum_to_one(name, options):
    model = build_model(LAYOUT, cfg(name, options=options))
    _, gates = model.forward_with_gates(*batch())
    expected = 2 if name == "mmoe" else 2 * 2 + 1  # PLE: 2 task gates per level + 1 shared gate below the last
    assert len(gates) == expected
    for key, w in gates.items():
        assert (w >= 0).all(), key
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[0]), msg=key)
    if name == "mmoe":
        assert all(w.shape == (32, 3) for w in gates.values())


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="n_expert"):
        build_model(LAYOUT, cfg("mmoe", options={"n_expert": 3}))


def test_star_domain_weights_touch_only_their_domain():
    torch.manual_seed(0)
    model = build_model(LAYOUT, cfg("star"))
    sparse, dense = batch()
    dom = domain_index(sparse, LAYOUT)
    assert dom.tolist() == (torch.arange(32) % (N_DOMAINS + 1)).tolist()
    model.eval()
    before = model(sparse, dense).detach()
    with torch.no_grad():  # change domain 2's specific FCN weights and PN parameters
        model.fcn.domain_w[0][2].mul_(3.0)
        model.pn.beta_p[2].add_(1.0)
    after = model(sparse, dense).detach()
    changed = (before - after).abs().amax(1) > 1e-6
    assert changed[dom == 2].all()
    assert not changed[dom != 2].any()
    # and in training, a row's loss sends gradient only to its own domain's weights
    model.train()
    model.zero_grad()
    rows = dom == 1
    model(sparse[rows], dense[rows]).sum().backward()
    gw = model.fcn.domain_w[0].grad.abs().flatten(1).sum(1)
    assert gw[1] > 0 and gw[[0, 2, 3]].sum() == 0


def test_star_needs_the_domain_field():
    layout = ModelLayout(**{**LAYOUT.__dict__, "domain_field": None})
    with pytest.raises(ValueError, match="domain"):
        build_model(layout, cfg("star"))


# ----------------------------------------------------------------------------- PEPNet ablation flags


def grads_of_general_embeddings_through_gates(stop_gradient: bool) -> torch.Tensor:
    """Gradient reaching the embedding table when the loss is the EPNet gate output alone (not delta * E)."""
    torch.manual_seed(0)
    model = build_model(LAYOUT, cfg("pepnet", stop_gradient=stop_gradient))
    sparse, dense = batch()
    emb = model.embedding(sparse, dense)
    general = model.general(emb)
    _, delta = model.epnet(general, model.domain_side(emb).detach())  # gradient via E only
    delta.sum().backward()
    return model.embedding.table.weight.grad


def test_stop_gradient_blocks_gate_gradient_into_general_embeddings():
    assert grads_of_general_embeddings_through_gates(True) is None
    g = grads_of_general_embeddings_through_gates(False)
    assert g is not None and g.coalesce().values().abs().sum() > 0


def test_stop_gradient_on_ppnet_gate_input():
    torch.manual_seed(0)
    for flag in (True, False):
        model = build_model(LAYOUT, cfg("ppnet_only", stop_gradient=flag))
        o_ep = torch.randn(4, 5 * 4, requires_grad=True)
        prior = torch.randn(4, 3 * 4)
        deltas = model.ppnet(o_ep, prior, with_gates=True)[1]
        sum(d.sum() for d in deltas).backward()
        assert (o_ep.grad is None) == flag


@pytest.mark.parametrize("flag,value,check", [
    ("gamma", 1.0, lambda m, g: float(g["epnet"].detach().max()) <= 1.0),
    ("epnet_granularity", "field", lambda m, g: g["epnet"].shape == (32, 5, 1)),
    ("gate_hidden", 7, lambda m, g: m.epnet.gate.hidden == 7 and all(x.hidden == 7 for x in m.ppnet.gates)),
    ("ppnet_gate_on", "output", lambda m, g: [x.shape[-1] for k, x in g.items() if k.startswith("ppnet")] == [8, 6]),
    ("ppnet_gate_mode", "per_task", lambda m, g: all(x.groups == 2 for x in m.ppnet.gates)),
    ("ppnet_priors", ["user_prior"], lambda m, g: m.prior.fields == (0,)),
])
def test_ablation_flag_changes_its_computation(flag, value, check):
    torch.manual_seed(0)
    default = build_model(LAYOUT, cfg("pepnet"))
    sparse, dense = batch()
    _, g0 = default.forward_with_gates(sparse, dense)
    assert not check(default, g0), f"the default already satisfies the {flag} check"
    torch.manual_seed(0)
    model = build_model(LAYOUT, cfg("pepnet", **{flag: value}))
    logits, g = model.forward_with_gates(sparse, dense)
    assert check(model, g)
    assert logits.shape == (32, 2)


def test_gate_on_input_vs_output_widths():
    _, g = build_model(LAYOUT, cfg("pepnet")).forward_with_gates(*batch())
    assert [x.shape for k, x in g.items() if k.startswith("ppnet")] == [(32, 2, 20), (32, 2, 8)]  # layer inputs


def test_domain_stats_flag_changes_domain_side_group():
    from pepnet.prepare import layout_from_encoder

    class FakeEncoder:  # the part of Encoder layout_from_encoder reads
        class schema:
            domain = "dom"
            features = [type("F", (), {"name": "dom", "source": "dom", "kind": "sparse", "oov_dropout": 0.0})()]
        num_embeddings, sparse_fields, dense_fields, task_names = 30, [0, 1, 2], [0, 1], ["click", "like"]
        fields = {2: type("FI", (), {"offset": DOMAIN_OFFSET})()}

        @staticmethod
        def group(name):
            return {"general": [0, 1, 2, 3, 4], "domain_side": [2, 4], "user_prior": [0], "item_prior": [1],
                    "author_prior": [3]}[name]

        @staticmethod
        def field_index(name):
            return 2

    full = layout_from_encoder(FakeEncoder, cfg("pepnet"), N_DOMAINS)
    only_id = layout_from_encoder(FakeEncoder, cfg("pepnet", domain_stats=False), N_DOMAINS)
    assert full.group("domain_side") == [2, 4] and only_id.group("domain_side") == [2]
    m_full, m_id = build_model(full, cfg("pepnet")), build_model(only_id, cfg("pepnet", domain_stats=False))
    assert m_full.epnet.gate.in_dim == (2 + 5) * 4 and m_id.epnet.gate.in_dim == (1 + 5) * 4
