"""DPO's implicit reward (Rafailov et al. 2023): ``beta * log(pi_tuned(y|x) / pi_ref(y|x))`` summed over
the completion's tokens. Exact for a DPO-tuned policy (up to a per-prompt term, which EPIC ignores); for an
RL-tuned policy with a KL penalty the optimum has the same form, so it estimates that reward too."""

from __future__ import annotations

from irmscope.leaderboard.base import Estimates, MethodInputs, RewardEstimator, register
from irmscope.tune.evaluate import completion_statistics


def log_likelihood(lm, prompts, completions):
    stats = completion_statistics(lm, None, prompts, completions)
    return -stats["nll"] * stats["n_tokens"]


class ImplicitReward(RewardEstimator):
    name = "DPO implicit reward"
    description = "beta * log(pi_tuned / pi_base) of each completion, no reward labels"

    def estimate(self, inputs: MethodInputs) -> Estimates:
        cov = inputs.coverage
        tuned = log_likelihood(inputs.tuned, cov.prompts, cov.completions)
        base = log_likelihood(inputs.base, cov.prompts, cov.completions)
        return Estimates(
            tuned=inputs.dpo_beta * (tuned - base),
            base=None,
            base_note="the base model's implicit reward against itself is identically 0",
        )


register(ImplicitReward())
