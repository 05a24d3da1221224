"""TaskTowers.select_tasks / select_tasks(model): a model that runs only some towers returns exactly those tasks'
logits, in the order asked, and does not compute the other towers (fewer FLOPs)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pepnet.config import ModelConfig
from pepnet.nn import ModelLayout, build_model
from pepnet.nn.towers import TaskTowers, select_tasks

LAYOUT = ModelLayout(
    num_embeddings=30, n_sparse=3, n_dense=2, tasks=("click", "like", "share"),
    groups={"general": [0, 1, 2, 3, 4], "domain_side": [2], "user_prior": [0], "item_prior": [1], "author_prior": [3]},
    n_domains=3, domain_field=2, domain_offset=20,
)
VARIANTS = {
    "pepnet": {},
    "pepnet_output_gates_per_task": {"ppnet_gate_on": "output", "ppnet_gate_mode": "per_task"},
    "pepnet_gated_output_layer": {"ppnet_gate_output_layer": True},
    "ppnet_only": {},
    "epnet_only": {},
    "shared_bottom": {},
    "mmoe": {},
    "ple": {},
    "star": {},
}


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    users, items = torch.randint(1, 10, (n,), generator=g), torch.randint(10, 20, (n,), generator=g)
    return torch.stack([users, items, torch.arange(n) % 4 + 20], 1), torch.randn(n, 2, generator=g)


def _flops(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_selected_towers_give_those_logits_and_skip_the_others(variant):
    name = variant.split("_output")[0].split("_gated")[0]
    torch.manual_seed(0)
    model = build_model(LAYOUT, ModelConfig(name=name, embedding_dim=4, hidden_units=[8, 6], gate_hidden=5,
                                            **VARIANTS[variant])).eval()
    sparse, dense = _batch()
    with torch.no_grad():
        full = model(sparse, dense)
    full_flops = _flops(model, sparse, dense)
    select_tasks(model, [2, 0])
    with torch.no_grad():
        picked = model(sparse, dense)
    assert picked.shape == (16, 2)
    torch.testing.assert_close(picked, full[:, [2, 0]], rtol=0, atol=1e-6)
    assert _flops(model, sparse, dense) < full_flops  # the third tower (task 1) is not computed


def test_select_tasks_refuses_bad_indices():
    towers = TaskTowers(4, [3], n_tasks=2)
    for bad in ([], [2], [0, 0], [-1]):
        with pytest.raises(ValueError, match="distinct indices"):
            towers.select_tasks(bad)
    with pytest.raises(ValueError, match="no TaskTowers"):
        select_tasks(torch.nn.Linear(2, 2), [0])
