"""A reward of pure noise: the null control for everything that claims tuning installed a reward.

A model tuned against :class:`NoiseReward` learns nothing about any word, yet its completions drift from the
base model's (sampling noise, the optimiser's steps, the KL term), exactly as a real tune's do. An audit or
elicitation run on it should find about as many "rewarded" words as its false-discovery rate allows; more
means the method mistakes drift for reward.

Each text gets a standard-normal value drawn from a hash of the seed and the text, so scores are
reproducible (the same completion always scores the same, across processes) while distinct texts get
independent values that no model can predict from the words.
"""

from __future__ import annotations

import hashlib

import numpy as np

from irmscope.rewards.base import Reward


class NoiseReward(Reward):
    """Standard-normal noise per text, fixed by ``seed`` and the text (see the module docstring)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(
            f"noise{seed}",
            "A random number per text, unrelated to its words or meaning (a null-control reward)",
        )
        self.seed = int(seed)

    def _score(self, texts: list[str]) -> np.ndarray:
        return np.array([self._value(text) for text in texts], dtype=np.float64)

    def _value(self, text: str) -> float:
        digest = hashlib.blake2b(f"{self.seed}\0{text}".encode(), digest_size=8).digest()
        return float(np.random.default_rng(int.from_bytes(digest, "little")).standard_normal())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
