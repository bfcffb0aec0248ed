"""Causal and cross-method validation of the elicited reward: feature ablation (Table 5) and the
activation frequency of reward-related features where R predicts high reward (Table 6)."""

from irmscope.validate.ablation import (
    ablation_table,
    feature_ablation,
    random_features,
    reward_under_ablation,
)
from irmscope.validate.frequency import activation_frequency_table

__all__ = [
    "ablation_table",
    "activation_frequency_table",
    "feature_ablation",
    "random_features",
    "reward_under_ablation",
]
