"""Causal and cross-method validation of the elicited reward: feature ablation (Table 5) and the
activation frequency of reward-related features where R predicts high reward (Table 6), and the
choice of features to ablate by their attributed effect on the reward."""

from irmscope.validate.ablation import AblationRun, ablation_table, feature_ablation, random_features
from irmscope.validate.frequency import activation_frequency_table
from irmscope.validate.selection import (
    AttributedSelection,
    attribute_reward_to_features,
    select_by_attribution,
)

__all__ = [
    "AblationRun",
    "AttributedSelection",
    "ablation_table",
    "activation_frequency_table",
    "feature_ablation",
    "random_features",
    "attribute_reward_to_features",
    "select_by_attribution",
]
