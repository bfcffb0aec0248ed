"""The endogenous reward ("Generalist Reward Models: Found Inside Large Language Models", 2025): read a
language model's logits as soft Q-values, so its policy is ``softmax(Q / alpha)`` with soft value
``V(s) = alpha * logsumexp(Q(s, .) / alpha)``, and inverse soft Bellman gives the token reward
``r(s, a) = alpha * log pi(a|s) + V(s) - V(s')``. Summed over a completion's tokens the values telescope:

    R(x, y) = alpha * (sum_t log pi(y_t | x, y_<t) + logsumexp(logits after x) - logsumexp(logits after x+y))

with the logits themselves as ``Q / alpha``. The overall scale ``alpha`` changes no metric here, so it is 1.
Every model has one, so the base model's is the control: it needs no tuning and no reward labels at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from irmscope.leaderboard.base import Estimates, MethodInputs, RewardEstimator, register
from irmscope.models.generation import batches, completion_batch
from irmscope.models.loading import LoadedModel


@torch.no_grad()
def endogenous_reward(
    lm: LoadedModel, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 8
) -> np.ndarray:
    """``R(x, y)`` of the module docstring for each prompt and completion."""
    out = []
    for _, prompt_chunk, completion_chunk in batches(prompts, completions, size=batch_size):
        ids, attention, completion = completion_batch(lm, prompt_chunk, completion_chunk)
        logits = lm.model(input_ids=ids, attention_mask=attention).logits.float()
        logp = F.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        likelihood = (logp * completion[:, 1:]).sum(1)
        rows = torch.arange(len(ids))
        # the prompt's last token gives V(x) (an empty completion then gives R = 0); with an empty prompt
        # there is no state before the first token, so V is read after it
        first = (attention.sum(1) - completion.sum(1) - 1).clamp(min=0)
        last = attention.sum(1) - 1  # the completion's last token: V(x + y)
        values = torch.logsumexp(logits, -1)
        out.append((likelihood + values[rows, first] - values[rows, last]).numpy())
    return np.concatenate(out)


class EndogenousReward(RewardEstimator):
    name = "endogenous reward"
    description = "inverse soft Bellman on the model's own logits (no reward labels, no reference model)"

    def estimate(self, inputs: MethodInputs) -> Estimates:
        cov = inputs.coverage
        return Estimates(
            tuned=endogenous_reward(inputs.tuned, cov.prompts, cov.completions),
            base=endogenous_reward(inputs.base, cov.prompts, cov.completions),
        )


register(EndogenousReward())
