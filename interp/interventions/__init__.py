"""Training-free interventions on attention heads, each a value applied in a context."""

from interp.interventions.act import ACT, ActConfig
from interp.interventions.attention_edit import AttentionEdit, uniform_attention
from interp.interventions.base import Intervention, applied_all
from interp.interventions.head_scale import HeadScale, mean_head_outputs
from interp.interventions.var import VAR, VarConfig
from interp.interventions.vhr import VHR, VhrConfig

__all__ = [
    "ACT",
    "VAR",
    "VHR",
    "ActConfig",
    "AttentionEdit",
    "HeadScale",
    "Intervention",
    "VarConfig",
    "VhrConfig",
    "applied_all",
    "mean_head_outputs",
    "uniform_attention",
]
