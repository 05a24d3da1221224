"""Models by name. A model takes (ModelLayout, ModelConfig) and maps (sparse, dense) to logits [B, T];
it exposes ``embedding_parameters()`` so the trainer can give them Adagrad and the rest Adam."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import ModelConfig
from .baselines import PLE, STAR, MMoE, SharedBottom
from .layout import ModelLayout
from .pepnet import PEPNet

Builder = Callable[[ModelLayout, ModelConfig], nn.Module]

MODELS: dict[str, Builder] = {
    "pepnet": lambda layout, cfg: PEPNet(layout, cfg),
    "epnet_only": lambda layout, cfg: PEPNet(layout, cfg, use_ppnet=False),
    "ppnet_only": lambda layout, cfg: PEPNet(layout, cfg, use_epnet=False),
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
    "star": STAR,
}


def register(name: str, builder: Builder) -> None:
    MODELS[name] = builder


def build_model(layout: ModelLayout, cfg: ModelConfig) -> nn.Module:
    if cfg.name not in MODELS:
        import difflib

        hint = difflib.get_close_matches(cfg.name, list(MODELS), n=1)
        raise ValueError(f"model.name {cfg.name!r} is unknown" + (f"; did you mean {hint[0]!r}?" if hint else "")
                         + f"; available: {sorted(MODELS)}")
    return MODELS[cfg.name](layout, cfg)
