"""Every reward estimate scored against the known reward on the same completions, with controls and CIs."""

from irmscope.leaderboard.base import (
    METHODS,
    Coverage,
    Estimates,
    MethodInputs,
    RewardEstimator,
    register,
)
from irmscope.leaderboard.board import available_methods, build_leaderboard
from irmscope.leaderboard.metrics import canonicalize, epic_distance, preference_accuracy, score_estimate

__all__ = [
    "METHODS",
    "Coverage",
    "Estimates",
    "MethodInputs",
    "RewardEstimator",
    "available_methods",
    "build_leaderboard",
    "canonicalize",
    "epic_distance",
    "preference_accuracy",
    "register",
    "score_estimate",
]
