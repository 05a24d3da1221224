"""Neural modules: FeatureEmbedding, GateNU, EPNet, PPNet, TaskTowers, PEPNet and the model registry."""
from .embedding import FeatureEmbedding
from .epnet import EPNet
from .gates import GateNU
from .layout import ModelLayout
from .pepnet import PEPNet
from .ppnet import PPNet
from .registry import MODELS, build_model, register
from .towers import TaskTowers

__all__ = ["EPNet", "FeatureEmbedding", "GateNU", "MODELS", "ModelLayout", "PEPNet", "PPNet", "TaskTowers",
           "build_model", "register"]
