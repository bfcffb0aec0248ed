"""Contrast-consistent search (Burns et al., 2022): a reward direction found the way a truth direction is,
without reward labels (a research question of the project proposal
"Eliciting Internal Reward Models in LLMs").

Each contrast pair is one contrastive triple's positive and negative text (the same context ending in a
rewarded or a penalised word), read at that word. CCS asks for a probe ``p`` with ``p(a) ≈ 1 - p(b)`` on
every pair (consistency) that is not 0.5 on both (confidence). The pair's members are put in a random
order first: Burns et al. normalise each side separately, and if one side always held the positive text
that normalisation would subtract exactly the direction sought. With the order random both sides have the
same distribution, so one normalisation (the mean and spread of every text of the fitting pairs) stands
in for the two, and it is the one the probe applies when it scores a single text: a probe fitted on
per-side statistics but scored with pooled ones would be read in other units than it was fitted in, and
its held-out loss (normalised by the held-out pairs' own statistics) would not be the loss of the probe
that scores completions. Which end of the direction is "rewarded" is
one bit CCS cannot know; it is set so that positive texts score higher on average, the only use of the
construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from irmscope.errors import IrmscopeError


@dataclass(frozen=True)
class CcsProbe:
    """``score(x) = ((x - mean) / scale) @ weights``, oriented so positive texts score higher;
    ``held_out_loss`` is the CCS loss on pairs the probe was not fitted on (what layers are compared by).
    The CCS probability of a text is ``sigmoid(orientation * (score(x) + bias))``."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    train_loss: float
    held_out_loss: float
    #: how often the positive text of a held-out pair scores higher (reported, never fitted on)
    held_out_pair_accuracy: float
    bias: float
    orientation: float

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights


@dataclass(frozen=True)
class PairSide:
    """One member of every pair, normalised, kept in both layouts the batched products read:
    ``rows`` ``[..., n, width]`` and ``columns``, its transpose ``[..., width, n]``, each contiguous.

    A handful of probes against a few hundred texts is a narrow product, slow on the 2-core CPU when read
    through a transposed view, which is what autograd's own gradient of one layout reads. With both layouts
    the demo's CCS row took 36 s against 42 to 44 (docs/findings.md, Benchmarks)."""

    rows: torch.Tensor
    columns: torch.Tensor

    @classmethod
    def of(cls, rows: torch.Tensor) -> PairSide:
        return cls(rows.contiguous(), rows.transpose(-1, -2).contiguous())


class _ProbeScores(torch.autograd.Function):
    """``weights @ side.columns`` (``[..., probes, n]``), its gradient against the weights taken with
    ``side.rows`` (see :class:`PairSide`)."""

    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, columns: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        return weights @ columns

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (rows,) = ctx.saved_tensors
        return grad @ rows, None, None


def ccs_loss(first: PairSide, second: PairSide, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """CCS loss of every probe (rows of ``weights``) on normalised pairs: ``[..., probes]``. Each side holds
    ``n`` pairs' members of width ``width``, weights are ``[..., probes, width]`` and bias ``[..., probes]``,
    with any leading dimensions (e.g. one per layer) shared by all of them."""
    p1 = torch.sigmoid(_ProbeScores.apply(weights, first.columns, first.rows) + bias.unsqueeze(-1))
    p2 = torch.sigmoid(_ProbeScores.apply(weights, second.columns, second.rows) + bias.unsqueeze(-1))
    return ((p1 - (1 - p2)) ** 2).mean(-1) + (torch.minimum(p1, p2) ** 2).mean(-1)


def pair_split(n: int, held_out_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``n`` pairs have their members swapped (see the module docstring) and which are held out."""
    rng = np.random.default_rng(seed)
    return rng.random(n) < 0.5, rng.random(n) < held_out_fraction


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
    if positive.shape != negative.shape or positive.ndim != 2:
        raise IrmscopeError(f"CCS needs matched pairs of vectors; got {positive.shape} and {negative.shape}")
    return fit_ccs_layers(
        positive[:, None], negative[:, None], n_restarts, steps, held_out_fraction, weight_decay, seed
    )[0]


def fit_ccs_layers(
    positive: np.ndarray,
    negative: np.ndarray,
    n_restarts: int = 10,
    steps: int = 300,
    held_out_fraction: float = 0.3,
    weight_decay: float = 0.1,
    seed: int = 0,
) -> list[CcsProbe]:
    """:func:`fit_ccs` at every layer of ``[pairs, layers, width]`` read-outs, each layer its own probe:
    the same pairs, split and random starts for every layer, all layers optimised together (one batched
    product per step instead of one small one per layer; Adam's updates are per weight, so each layer's
    fit is the one it would have alone, up to float rounding)."""
    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if positive.shape != negative.shape or positive.ndim != 3 or len(positive) < 10:
        raise IrmscopeError(f"CCS needs at least 10 matched pairs; got {positive.shape} and {negative.shape}")
    n, n_layers, width = positive.shape
    swap, held = pair_split(n, held_out_fraction, seed)
    first = np.where(swap[:, None, None], negative, positive)
    second = np.where(swap[:, None, None], positive, negative)
    fitting = np.concatenate([first[~held], second[~held]])
    mean, scale = fitting.mean(0), fitting.std(0)  # per layer and feature
    scale[scale < 1e-6] = 1.0

    def as_side(rows: np.ndarray) -> PairSide:  # rows [layers, pairs, width]
        return PairSide.of(torch.as_tensor(((rows - mean) / scale).transpose(1, 0, 2), dtype=torch.float32))

    a, b = as_side(first[~held]), as_side(second[~held])
    torch.manual_seed(seed)
    start = torch.randn(width, n_restarts) / np.sqrt(width)  # every layer starts where a lone fit would
    weights = torch.nn.Parameter(start.T.expand(n_layers, n_restarts, width).clone())
    bias = torch.nn.Parameter(torch.zeros(n_layers, n_restarts))
    optimiser = torch.optim.AdamW([weights, bias], lr=3e-2, weight_decay=weight_decay)
    for _ in range(steps):
        optimiser.zero_grad()
        ccs_loss(a, b, weights, bias).sum().backward()
        optimiser.step()
    with torch.no_grad():
        train = ccs_loss(a, b, weights, bias)
        held_out = ccs_loss(as_side(first[held]), as_side(second[held]), weights, bias)
    probes = []
    for layer in range(n_layers):
        best = int(train[layer].argmin())
        raw = CcsProbe(
            weights.detach()[layer, best].double().numpy(), mean[layer], scale[layer],
            float(train[layer, best]), float(held_out[layer, best]), float("nan"),
            float(bias.detach()[layer, best]), 1.0,
        )  # fmt: skip
        probes.append(_oriented(raw, positive[:, layer], negative[:, layer], held))
    return probes


def _oriented(raw: CcsProbe, positive: np.ndarray, negative: np.ndarray, held: np.ndarray) -> CcsProbe:
    """``raw`` turned so that positive texts score higher on the fitting pairs (so the held-out pair
    accuracy stays held out), with that accuracy."""
    fitted = ~held
    sign = 1.0 if (raw.score(positive[fitted]) - raw.score(negative[fitted])).mean() >= 0 else -1.0
    wins = float((sign * (raw.score(positive[held]) - raw.score(negative[held])) > 0).mean())
    return CcsProbe(
        sign * raw.weights,
        raw.mean,
        raw.scale,
        raw.train_loss,
        raw.held_out_loss,
        wins,
        sign * raw.bias,
        sign,
    )
