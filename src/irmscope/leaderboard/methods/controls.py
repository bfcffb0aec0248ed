"""Floors every method must beat: an estimate that knows nothing about the completions, and one that knows
only which model wrote each completion (the tuned model's completions score higher, so knowing the author
alone already earns a high pooled correlation and preference accuracy)."""

from __future__ import annotations

import numpy as np

from irmscope.leaderboard.base import Estimates, MethodInputs, RewardEstimator, register


class RandomEstimate(RewardEstimator):
    name = "random (control)"
    description = "seeded Gaussian noise, one value per completion: where chance lies on every metric"

    def estimate(self, inputs: MethodInputs) -> Estimates:
        n = len(inputs.coverage.completions)
        return Estimates(
            tuned=np.random.default_rng(inputs.seed).standard_normal(n),
            base=np.random.default_rng(inputs.seed + 1).standard_normal(n),
        )


class WhichPolicy(RewardEstimator):
    name = "which model wrote it (control)"
    description = "1 for the tuned model's completions, 0 for the base model's: authorship, no content"

    def estimate(self, inputs: MethodInputs) -> Estimates:
        return Estimates(
            tuned=(np.asarray(inputs.coverage.policy) == "tuned").astype(float),
            base=None,
            base_note="the control is the same for both models",
        )


register(RandomEstimate())
register(WhichPolicy())
