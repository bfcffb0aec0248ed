"""How far an elicited word→value lexicon is from the true one (main paper §5.1, Tables 4 and 11).

The paper reports Kendall's tau between reconstructed and true values; we add its p-value, Spearman's rho,
the fraction of words whose sign agrees, and a bootstrap interval for tau over words, for all words and for
the negative words only (Table 11 asks whether a method ranks words *within* one polarity, not just
separates the two).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from irmscope.errors import IrmscopeError
from irmscope.stats import Estimate

#: Below this many words a rank correlation is not reported (it would be noise with a p-value).
MIN_WORDS = 5


@dataclass(frozen=True)
class Agreement:
    """Rank and sign agreement between elicited and true values over ``n`` words."""

    n: int
    kendall_tau: float
    kendall_p: float
    kendall_ci: tuple[float, float]
    spearman_rho: float
    spearman_p: float
    sign_agreement: float

    def to_dict(self) -> dict[str, float | int | list[float]]:
        out = asdict(self)
        out["kendall_ci"] = list(self.kendall_ci)
        return out


def _nan_agreement(n: int) -> Agreement:
    nan = math.nan
    return Agreement(n, nan, nan, (nan, nan), nan, nan, nan)


def agreement(
    elicited: Sequence[float] | np.ndarray,
    truth: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Agreement:
    """Kendall (with p-value and a bootstrap 95% interval over words), Spearman, and sign agreement.

    A constant elicited lexicon has no ranking: its correlations are NaN, never 0, so a degenerate method
    cannot pass for an uncorrelated one. Sign agreement counts words whose true value is nonzero.
    """
    x = np.asarray(elicited, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if x.shape != y.shape:
        raise IrmscopeError(f"{x.size} elicited values but {y.size} true values; align them by word first")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise IrmscopeError("elicited or true values contain NaN or inf; drop those words first")
    n = int(x.size)
    if n < MIN_WORDS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return _nan_agreement(n)
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    signed = y != 0
    sign = float(np.mean(np.sign(x[signed]) == np.sign(y[signed]))) if signed.any() else math.nan
    low, high = _kendall_bootstrap_ci(x, y, n_resamples, seed)
    return Agreement(
        n=n,
        kendall_tau=float(tau.statistic),
        kendall_p=float(tau.pvalue),
        kendall_ci=(float(low), float(high)),
        spearman_rho=float(rho.statistic),
        spearman_p=float(rho.pvalue),
        sign_agreement=sign,
    )


def _kendall_bootstrap_ci(x: np.ndarray, y: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    """Percentile 95% interval of Kendall's tau-b over word resamples, all resamples at once.

    A resample is a vector of counts ``c`` (how often each word was drawn). Pairs of draws of the same word
    are ties in both variables and drop out of tau-b, so with the pairwise sign matrices ``Sx``, ``Sy``
    tau-b of the resample is ``c'(Sx∘Sy)c / sqrt(c'|Sx|c · c'|Sy|c)``: three matrix products per batch.
    """
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    n = x.size
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)

    def quad(matrix: np.ndarray) -> np.ndarray:
        return np.einsum("bi,bi->b", counts @ matrix, counts)

    denominator = np.sqrt(quad(np.abs(sx)) * quad(np.abs(sy)))
    valid = denominator > 0
    if not valid.any():
        return math.nan, math.nan
    taus = quad(sx * sy)[valid] / denominator[valid]
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(low), float(high)


def lexicon_agreement(
    elicited: Mapping[str, float],
    truth: Mapping[str, float],
    words: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, dict]:
    """:func:`agreement` on ``words`` (default: every word both lexicons have), for all and negative words.

    Returns ``{"all": ..., "negative": ...}`` (each :meth:`Agreement.to_dict`), where "negative" keeps the
    words whose true value is below zero (the paper's Table 11).
    """
    chosen = [w for w in (words if words is not None else elicited) if w in elicited and w in truth]
    if not chosen:
        raise IrmscopeError("the elicited and true lexicons share none of the requested words")
    x = np.array([elicited[w] for w in chosen])
    y = np.array([truth[w] for w in chosen])
    negative = y < 0
    return {
        "all": agreement(x, y, seed=seed).to_dict(),
        "negative": agreement(x[negative], y[negative], seed=seed).to_dict(),
    }


def tau_estimate(result: Mapping[str, float | list[float]]) -> Estimate:
    """An ``Agreement`` dict's tau as an :class:`~irmscope.stats.Estimate` (for tables and plots)."""
    low, high = result["kendall_ci"]
    return Estimate(float(result["kendall_tau"]), float(low), float(high), 0.95, int(result["n"]))
