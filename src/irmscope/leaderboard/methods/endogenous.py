"""The endogenous reward ("Generalist Reward Models: Found Inside Large Language Models", 2025): read a
language model's logits as soft Q-values, so its policy is ``softmax(Q / alpha)`` with soft value
``V(s) = alpha * logsumexp(Q(s, .) / alpha)``, and inverse soft Bellman gives the token reward
``r(s, a) = alpha * log pi(a|s) + V(s) - V(s')``. Summed over a completion's tokens the values telescope:

    R(x, y) = alpha * (sum_t log pi(y_t | x, y_<t) + logsumexp(logits after x) - logsumexp(logits after x+y))

with the logits themselves as ``Q / alpha``. The overall scale ``alpha`` changes no metric here, so it is 1.
Every model has one, so the base model's is the control: it needs no tuning and no reward labels at all.
"""

from __future__ import annotations

import numpy as np

from irmscope.leaderboard.base import Estimates, MethodInputs, RewardEstimator, register
from irmscope.models.reading import CompletionLikelihoods


def endogenous_reward(likelihoods: CompletionLikelihoods) -> np.ndarray:
    """``R(x, y)`` of the module docstring for each completion (an empty completion gives 0)."""
    return likelihoods.log_likelihood + likelihoods.value_after_prompt - likelihoods.value_after_completion


class EndogenousReward(RewardEstimator):
    name = "endogenous reward"
    description = "inverse soft Bellman on the model's own logits (no reward labels, no reference model)"

    def estimate(self, inputs: MethodInputs) -> Estimates:
        return Estimates(
            tuned=endogenous_reward(inputs.likelihoods(inputs.tuned)),
            base=endogenous_reward(inputs.likelihoods(inputs.base)),
        )


register(EndogenousReward())
