"""DPO's implicit reward (Rafailov et al. 2023): ``beta * log(pi_tuned(y|x) / pi_ref(y|x))`` summed over
the completion's tokens. Exact for a DPO-tuned policy (up to a per-prompt term, which EPIC ignores); for an
RL-tuned policy with a KL penalty the optimum has the same form, so it estimates that reward too.

Two rows: the studied tuned model's implicit reward, and that of another checkpoint of the same base when
the run names one (``probes.dpo_model``, e.g. a DPO-tuned model): the implicit reward is a function of
(prompt, completion), so any policy's can be scored on the same coverage completions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from irmscope.leaderboard.base import Estimates, MethodInputs, RewardEstimator, register
from irmscope.models.loading import LoadedModel
from irmscope.models.reading import CompletionLikelihoods


def implicit_reward(
    policy: CompletionLikelihoods, reference: CompletionLikelihoods, beta: float
) -> np.ndarray:
    """``beta * (log pi_policy(y|x) - log pi_reference(y|x))`` of each completion."""
    return beta * (policy.log_likelihood - reference.log_likelihood)


class ImplicitReward(RewardEstimator):
    """The implicit reward of the policy ``policy_of(inputs)`` returns (``None``: not in this run)."""

    def __init__(self, name: str, description: str, policy_of: Callable[[MethodInputs], LoadedModel | None]):
        self.name, self.description, self.policy_of = name, description, policy_of

    def estimate(self, inputs: MethodInputs) -> Estimates | None:
        policy = self.policy_of(inputs)
        if policy is None:
            return None
        return Estimates(
            tuned=implicit_reward(
                inputs.likelihoods(policy), inputs.likelihoods(inputs.base), inputs.dpo_beta
            ),
            base=None,
            base_note="the base model's implicit reward against itself is identically 0",
        )


register(
    ImplicitReward(
        "DPO implicit reward",
        "beta * log(pi_tuned / pi_base) of each completion, no reward labels",
        lambda inputs: inputs.tuned,
    )
)
register(
    ImplicitReward(
        "DPO implicit reward (probes.dpo_model)",
        "beta * log(pi_other / pi_base) of the checkpoint named by probes.dpo_model, no reward labels",
        lambda inputs: inputs.other_policies.get("dpo"),
    )
)
