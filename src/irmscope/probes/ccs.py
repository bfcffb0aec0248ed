"""Contrast-consistent search (Burns et al., 2022): a reward direction found the way a truth direction is,
without reward labels (a research question of the project proposal
"Eliciting Internal Reward Models in LLMs").

Each contrast pair is one contrastive triple's positive and negative text (the same context ending in a
rewarded or a penalised word), read at that word. CCS asks for a probe ``p`` with ``p(a) ≈ 1 - p(b)`` on
every pair (consistency) that is not 0.5 on both (confidence). The pair's members are put in a random
order first: CCS normalises each side separately, and if one side always held the positive text that
normalisation would subtract exactly the direction sought. Which end of the direction is "rewarded" is
one bit CCS cannot know; it is set so that positive texts score higher on average, the only use of the
construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from irmscope.errors import IrmscopeError


@dataclass(frozen=True)
class CcsProbe:
    """``score(x) = ((x - mean) / scale) @ weights``; ``held_out_loss`` is the CCS loss on pairs the
    probe was not fitted on (what layers are compared by)."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    train_loss: float
    held_out_loss: float
    #: how often the positive text of a held-out pair scores higher (reported, never fitted on)
    held_out_pair_accuracy: float

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def ccs_loss(
    first: torch.Tensor, second: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """CCS loss of every probe (columns of ``weights``) on side-normalised pairs: ``[probes]``."""
    p1 = torch.sigmoid(_normalise(first) @ weights + bias)
    p2 = torch.sigmoid(_normalise(second) @ weights + bias)
    return ((p1 - (1 - p2)) ** 2).mean(0) + (torch.minimum(p1, p2) ** 2).mean(0)


def fit_ccs(
    positive: np.ndarray,
    negative: np.ndarray,
    n_restarts: int = 10,
    steps: int = 300,
    held_out_fraction: float = 0.3,
    weight_decay: float = 0.1,
    seed: int = 0,
) -> CcsProbe:
    """CCS on pairs (row ``i`` of ``positive`` and of ``negative``), best of ``n_restarts`` random starts
    by training loss, oriented so that ``positive`` rows score higher on average."""
    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if positive.shape != negative.shape or len(positive) < 10:
        raise IrmscopeError(f"CCS needs at least 10 matched pairs; got {positive.shape} and {negative.shape}")
    rng = np.random.default_rng(seed)
    swap = rng.random(len(positive)) < 0.5  # random member order: see the module docstring
    first = np.where(swap[:, None], negative, positive)
    second = np.where(swap[:, None], positive, negative)
    held = rng.random(len(positive)) < held_out_fraction
    torch.manual_seed(seed)
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    a, b = as_tensor(first[~held]), as_tensor(second[~held])
    weights = torch.nn.Parameter(torch.randn(a.shape[1], n_restarts) / np.sqrt(a.shape[1]))
    bias = torch.nn.Parameter(torch.zeros(n_restarts))
    optimiser = torch.optim.AdamW([weights, bias], lr=3e-2, weight_decay=weight_decay)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = ccs_loss(a, b, weights, bias)
        loss.sum().backward()
        optimiser.step()
    with torch.no_grad():
        train = ccs_loss(a, b, weights, bias)
        best = int(train.argmin())
        held_out = ccs_loss(as_tensor(first[held]), as_tensor(second[held]), weights, bias)[best]
    both = np.concatenate([positive, negative])
    mean, scale = both.mean(0), both.std(0)
    scale[scale == 0] = 1.0
    direction = weights.detach()[:, best].double().numpy()
    probe = CcsProbe(direction, mean, scale, float(train[best]), float(held_out), float("nan"))
    fitted = ~held  # the sign comes from fitting pairs only, so the held-out accuracy stays held out
    sign = 1.0 if (probe.score(positive[fitted]) - probe.score(negative[fitted])).mean() >= 0 else -1.0
    wins = float((sign * (probe.score(positive[held]) - probe.score(negative[held])) > 0).mean())
    return CcsProbe(sign * direction, mean, scale, probe.train_loss, probe.held_out_loss, wins)
