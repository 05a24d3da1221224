"""Baselines in the same framework as PEPNet (same FeatureEmbedding, TaskTowers, loss, trainer and metrics):
Shared-Bottom, MMoE (Ma et al. 2018), PLE (Tang et al. 2020) and STAR (Sheng et al. 2021).
Model-specific hyper-parameters come from ``model.options``; each module's ``DEFAULTS`` lists them."""
from .mmoe import MMoE
from .ple import PLE
from .shared_bottom import SharedBottom
from .star import STAR

__all__ = ["MMoE", "PLE", "STAR", "SharedBottom"]
