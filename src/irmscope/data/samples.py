"""Sample types shared by the methods that score completions (probes, attribution, the leaderboard).

They live low in the layers (beside the data sources) so that no method package has to import another to
share them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irmscope.artifacts import Samples


def first_of_each_policy(n_samples: int, n: int) -> np.ndarray:
    """Rows of the coverage order (every base sample, then every tuned one: :meth:`Coverage.from_samples`)
    that are among the first ``n`` samples of their policy."""
    keep = np.arange(min(n, n_samples))
    return np.concatenate([keep, n_samples + keep])


@dataclass(frozen=True)
class Coverage:
    """The completions every estimate is scored on: held-out prompts, each completed once by each policy.

    ``prompt_index[i]`` groups completions of one prompt; ``policy[i]`` is ``"base"`` or ``"tuned"``;
    ``true[i]`` is the known reward of ``prompts[i] + completions[i]``.
    """

    prompts: list[str]
    completions: list[str]
    prompt_index: np.ndarray
    policy: list[str]
    true: np.ndarray

    @classmethod
    def from_samples(cls, samples: Samples) -> Coverage:
        """From the evaluate stage's samples: each prompt's base completion, then its tuned one."""
        n = len(samples.prompts)
        return cls(
            prompts=list(samples.prompts) * 2,
            completions=samples.completions("base") + samples.completions("tuned"),
            prompt_index=np.tile(np.arange(n), 2),
            policy=["base"] * n + ["tuned"] * n,
            true=np.concatenate([samples.scores("base"), samples.scores("tuned")]),
        )

    @property
    def texts(self) -> list[str]:
        return [p + c for p, c in zip(self.prompts, self.completions, strict=True)]
