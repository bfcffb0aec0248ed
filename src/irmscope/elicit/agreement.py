"""How far an elicited word→value lexicon is from the true one (main paper §5.1, Tables 4 and 11).

The paper reports Kendall's tau between reconstructed and true values; we add its p-value, Spearman's rho,
the fraction of words whose sign agrees, and a bootstrap interval for tau over words, for all words and for
the negative words only (Table 11 asks whether a method ranks words *within* one polarity, not just
separates the two).

The paper's Table 4 calls its numbers a "Kendall tau distance"; every number here is the tau
*coefficient* (1: same order, 0: unrelated, -1: reversed). Without ties the distance (the share of
discordant pairs) is ``(1 - tau) / 2``: :func:`tau_distance` converts, for reading the two side by side.

Kendall's p-value assumes independent words, which a regression fitted on other words and read on these
does not give (every word is scored by the same fitted ``R``). :func:`agreement` therefore also takes a
*permutation null*: elicited values from refits on permuted lexicon values (the caller refits; for a
method that fits nothing, permuting the elicited values over words is the null), and reports the
empirical p-value ``(1 + #{null tau >= observed}) / (1 + n)`` and the null's central 95% range.

A tau can be large because a method separates positive from negative words and nothing more. The
*within-sign null* asks for more: the true values are permuted within the positive words and within the
negative words separately (every word keeps its sign), so the null keeps all the sign information and
only the order within each polarity is random. Its p-value is small only when the elicited values rank
words beyond their sign. It needs no refit (it conditions on the elicited values), and it is exact for
the hypothesis that, given the signs, the true values are exchangeable.
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
#: permutations drawn when the caller brings no null of its own
N_PERMUTATIONS = 200
#: taus closer than this are equal (tau-b is a ratio of pair counts; rounding differs by algorithm)
TAU_ROUNDING = 1e-12
#: up to this many words :func:`column_taus` uses the sign-matrix form (measured with one sign matrix per
#: column, before the columns shared one array: 15x faster at 20 words, even at 200, 4x slower at 600 than
#: one scipy call per column)
SIGN_MATRIX_WORDS = 150
#: cells of each ``[words, words, columns]`` array :func:`column_taus` holds at once (32 MB of float64; the
#: differences and their signs are two such arrays)
SIGN_MATRIX_CELLS = 1 << 22


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
    #: bootstrap resamples whose tau is undefined (too few distinct words drawn); left out of the interval
    kendall_ci_nan_resamples: int = 0
    #: empirical one-sided p-value of tau against the permutation null, its 95% range and size
    permutation_p: float = math.nan
    permutation_range: tuple[float, float] = (math.nan, math.nan)
    n_permutations: int = 0
    #: the same for the within-sign null (true values permuted within each sign): ranking beyond sign
    within_sign_p: float = math.nan
    within_sign_range: tuple[float, float] = (math.nan, math.nan)
    n_within_sign_permutations: int = 0

    def to_dict(self) -> dict[str, float | int | list[float]]:
        out = asdict(self)
        out["kendall_ci"] = list(self.kendall_ci)
        out["permutation_range"] = list(self.permutation_range)
        out["within_sign_range"] = list(self.within_sign_range)
        return out


def _nan_agreement(n: int) -> Agreement:
    nan = math.nan
    return Agreement(n, nan, nan, (nan, nan), nan, nan, nan)


def tau_distance(tau: float) -> float:
    """The normalised Kendall tau distance (share of discordant pairs) of a tau coefficient, exact
    without ties: how the paper's Table 4 states its numbers."""
    return (1.0 - tau) / 2.0


def permutation_test(
    observed: float, null: np.ndarray, y: np.ndarray
) -> tuple[float, tuple[float, float], int]:
    """Empirical p-value, central 95% range and size of the null taus of ``null``'s columns against ``y``
    (columns with no ranking are dropped): ``(1 + #{tau >= observed}) / (1 + n)``, which is never 0 and is
    exact for exchangeable nulls."""
    taus = column_taus(null, y)
    taus = taus[np.isfinite(taus)]
    if not len(taus) or not np.isfinite(observed):
        return math.nan, (math.nan, math.nan), int(len(taus))
    low, high = np.percentile(taus, [2.5, 97.5])
    # a null tau equal to the observed one counts as at least as large; the two may be computed by
    # different (equally exact) algorithms, so equal means within rounding (see column_taus)
    at_least = (taus >= observed - TAU_ROUNDING).sum()
    return float((1 + at_least) / (1 + len(taus))), (float(low), float(high)), int(len(taus))


def column_taus(columns: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of every column of ``columns`` (``[words, k]``) against ``y``, NaN where undefined.

    The same statistic either way: for few words the sign-matrix form of :func:`resampled_taus` (each word
    counted once), for a block of columns at a time, saves scipy's per-call overhead, which dominated
    permutation tests on small lexicons; for many words scipy's O(n log n) algorithm wins."""
    if len(y) > SIGN_MATRIX_WORDS:
        return np.array([stats.kendalltau(column, y).statistic for column in columns.T])
    # in the float64 of sx: einsum casts an int8 operand through a buffer, 1.5-2.5x slower here
    sy = pairwise_signs(y).astype(np.float64)
    y_pairs = float(np.count_nonzero(sy))
    block = max(1, SIGN_MATRIX_CELLS // max(len(y) ** 2, 1))  # columns whose sign matrices fit at once
    out = [np.zeros(0)]
    for start in range(0, columns.shape[1], block):
        part = columns[:, start : start + block]
        sx = np.sign(part[:, None, :] - part[None, :, :])  # [words, words, columns]
        # whole-number sums, as in resampled_taus: the same floats as its form with every count 1
        numerator = np.einsum("ijk,ij->k", sx, sy)
        denominator = np.sqrt(np.count_nonzero(sx, axis=(0, 1)) * y_pairs)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(denominator > 0, numerator / denominator, np.nan))
    return np.concatenate(out)


def within_sign_permutations(truth: np.ndarray, n_permutations: int, seed: int) -> np.ndarray:
    """``[words, permutations]``: ``truth`` permuted within its positive, its negative and its zero values
    separately (each word keeps its sign), the within-sign null."""
    rng = np.random.default_rng(seed)
    out = np.repeat(truth[:, None], n_permutations, axis=1)
    for members in (np.flatnonzero(truth > 0), np.flatnonzero(truth < 0), np.flatnonzero(truth == 0)):
        for k in range(n_permutations):
            out[members, k] = truth[rng.permutation(members)]
    return out


def agreement(
    elicited: Sequence[float] | np.ndarray,
    truth: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    null: np.ndarray | None = None,
) -> Agreement:
    """Kendall (with p-value and a bootstrap 95% interval over words), Spearman, sign agreement, and two
    permutation tests of tau: against ``null`` and against the within-sign null (see the module docstring).

    ``null`` (``[words, permutations]``) holds the elicited values of refits on permuted lexicon values;
    without it the elicited values are permuted over the words :data:`N_PERMUTATIONS` times (the right
    null for a method that fits nothing).
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
    if null is not None and null.shape[0] != n:
        raise IrmscopeError(f"the permutation null has {null.shape[0]} words, the elicited lexicon {n}")
    if n < MIN_WORDS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return _nan_agreement(n)
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    signed = y != 0
    sign = float(np.mean(np.sign(x[signed]) == np.sign(y[signed]))) if signed.any() else math.nan
    taus = resampled_taus([x], y, word_resamples(n, n_resamples, seed))[0]
    valid = np.isfinite(taus)
    low, high = np.percentile(taus[valid], [2.5, 97.5]) if valid.any() else (math.nan, math.nan)
    if null is None:
        rng = np.random.default_rng(seed)
        null = np.stack([rng.permutation(x) for _ in range(N_PERMUTATIONS)], axis=1)
    p, null_range, n_null = permutation_test(float(tau.statistic), null, y)
    # tau is symmetric: permuting the truth against the elicited values is the same test
    within = within_sign_permutations(y, N_PERMUTATIONS, seed + 1)
    within_p, within_range, n_within = permutation_test(float(tau.statistic), within, x)
    return Agreement(
        n=n,
        kendall_tau=float(tau.statistic),
        kendall_p=float(tau.pvalue),
        kendall_ci=(float(low), float(high)),
        spearman_rho=float(rho.statistic),
        spearman_p=float(rho.pvalue),
        sign_agreement=sign,
        kendall_ci_nan_resamples=int((~valid).sum()),
        permutation_p=p,
        permutation_range=null_range,
        n_permutations=n_null,
        within_sign_p=within_p,
        within_sign_range=within_range,
        n_within_sign_permutations=n_within,
    )


def word_resamples(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of ``n`` words as counts (``[resamples, n]``: how often each word was drawn)."""
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)


def resampled_taus(xs: Sequence[np.ndarray], y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each of ``xs`` against ``y`` in every word resample ``counts`` (the same
    resamples for all, so differences are paired): ``[len(xs), resamples]``, NaN where undefined.

    Pairs of draws of the same word are ties in both variables and drop out of tau-b, so with the pairwise
    sign matrices ``Sx``, ``Sy`` tau-b of a resample ``c`` is ``c'(Sx∘Sy)c / sqrt(c'|Sx|c · c'|Sy|c)``:
    one matrix product per read-out for the numerator, and :func:`untied_pairs` for the denominator.
    With whole-number counts (word resamples) the product's sums are whole numbers no larger than a
    resample's total count, so it runs in float32 (twice as fast) while that total is below 2**24, where
    float32 holds every whole number exactly; the sums over words that follow are taken in float64. The
    result is the same to the bit as in float64. Other weights run in float64 throughout."""
    counts = np.asarray(counts, dtype=np.float64)
    sy = pairwise_signs(y)
    whole = bool(np.all(counts == np.round(counts)))
    dtype = np.float32 if whole and counts.sum(axis=1).max(initial=0.0) < 2**24 else np.float64
    weights = counts.astype(dtype)
    out, y_pairs = [], untied_pairs(y, counts)  # y's untied pairs per resample: the same for every x
    for x in xs:
        concordance = (pairwise_signs(x) * sy).astype(dtype)
        numerator = np.einsum("bi,bi->b", (weights @ concordance).astype(np.float64), counts)
        denominator = np.sqrt(untied_pairs(x, counts) * y_pairs)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(denominator > 0, numerator / denominator, np.nan))
    return np.stack(out)


def pairwise_signs(values: np.ndarray) -> np.ndarray:
    """``sign(values[i] - values[j])`` for every pair: ``[n, n]``, in int8 when every value is finite.

    Two distinct finite floats never differ by exactly 0 (subnormals underflow gradually) and an overflow
    to ±inf keeps the sign, so the two comparisons give the float form's signs exactly, in an eighth of
    its memory: over an audit's ~2,300 lexicon words the float64 form filled two fresh 41 MB arrays per
    matrix (a 7,500-word lexicon: 450 MB each). A bootstrap of two read-outs over 2,276 words (1,000
    resamples, one thread) took 0.4–1.0 s with it here, 0.6–1.4 s before. Infinities and NaN
    (``inf - inf`` is NaN) keep the float form and its NaN."""
    values = np.asarray(values)
    if not np.isfinite(values).all():
        return np.sign(values[:, None] - values[None, :])
    above = values[:, None] > values[None, :]
    below = values[:, None] < values[None, :]
    return above.view(np.int8) - below.view(np.int8)


def untied_pairs(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``c'|S|c`` for every resample ``c`` (a row of ``counts``), ``S`` the pairwise sign matrix of
    ``values``: the ordered pairs of draws whose values differ, which is the squared total count less
    each tie group's squared total. Linear in the words instead of a matrix product, and exact (whole
    numbers far below 2**53, for whole-number counts), so equal to the matrix form to the bit."""
    counts = np.asarray(counts, dtype=np.float64)
    if values.size == 0:
        return np.zeros(len(counts))
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    group_totals = np.add.reduceat(counts[:, order], starts, axis=1)
    return counts.sum(axis=1) ** 2 - (group_totals**2).sum(axis=1)


def _kendall_bootstrap_ci(x: np.ndarray, y: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    """Percentile 95% interval of Kendall's tau-b over word resamples (see :func:`resampled_taus`)."""
    taus = resampled_taus([x], y, word_resamples(x.size, n_resamples, seed))[0]
    taus = taus[np.isfinite(taus)]
    if not len(taus):
        return math.nan, math.nan
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(low), float(high)


def tau_gap(
    tuned: Sequence[float] | np.ndarray,
    base: Sequence[float] | np.ndarray,
    truth: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float | int]:
    """``tau(tuned) - tau(base)`` against ``truth`` over the same words, with a paired percentile
    bootstrap: both taus are computed on the same word resamples, so the words both models find easy
    (or hard) cancel out of the interval as they do out of the gap. The gap, not either tau, is the
    evidence that tuning installed the reward. Also the number of resamples where it is undefined."""
    x, b, y = (np.asarray(a, dtype=np.float64) for a in (tuned, base, truth))
    if not (x.shape == b.shape == y.shape):
        raise IrmscopeError("the tuned, base and true values must be aligned over the same words")
    nan = {"value": math.nan, "low": math.nan, "high": math.nan, "n": int(x.size), "n_nan_resamples": 0}
    if x.size < MIN_WORDS or min(np.ptp(x), np.ptp(b), np.ptp(y)) == 0:
        return nan
    value = float(stats.kendalltau(x, y).statistic - stats.kendalltau(b, y).statistic)
    taus = resampled_taus([x, b], y, word_resamples(x.size, n_resamples, seed))
    gaps = taus[0] - taus[1]
    valid = np.isfinite(gaps)
    low, high = np.percentile(gaps[valid], [2.5, 97.5]) if valid.any() else (math.nan, math.nan)
    return {
        "value": value,
        "low": float(low),
        "high": float(high),
        "n": int(x.size),
        "n_nan_resamples": int((~valid).sum()),
    }


def lexicon_agreement(
    elicited: Mapping[str, float],
    truth: Mapping[str, float],
    words: Sequence[str] | None = None,
    seed: int = 0,
    null: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict]:
    """:func:`agreement` on ``words`` (default: every word both lexicons have), for all and negative words.

    ``null`` maps each word to its elicited values under the permutation null (see :func:`agreement`).
    Returns ``{"all": ..., "negative": ...}`` (each :meth:`Agreement.to_dict`), where "negative" keeps the
    words whose true value is below zero (the paper's Table 11).
    """
    chosen = [w for w in (words if words is not None else elicited) if w in elicited and w in truth]
    if not chosen:
        raise IrmscopeError("the elicited and true lexicons share none of the requested words")
    x = np.array([elicited[w] for w in chosen])
    y = np.array([truth[w] for w in chosen])
    z = None if null is None else np.stack([np.asarray(null[w], dtype=np.float64) for w in chosen])
    negative = y < 0
    z_negative = None if z is None else z[negative]
    return {
        "all": agreement(x, y, seed=seed, null=z).to_dict(),
        "negative": agreement(x[negative], y[negative], seed=seed, null=z_negative).to_dict(),
    }


def lexicon_gap(
    tuned: Mapping[str, float],
    base: Mapping[str, float],
    truth: Mapping[str, float],
    words: Sequence[str],
    seed: int = 0,
) -> dict[str, dict]:
    """:func:`tau_gap` on the ``words`` all three lexicons have, for all and negative words."""
    chosen = [w for w in words if w in tuned and w in base and w in truth]
    if not chosen:
        raise IrmscopeError("the tuned, base and true lexicons share none of the requested words")
    x, b, y = (np.array([lexicon[w] for w in chosen]) for lexicon in (tuned, base, truth))
    negative = y < 0
    return {
        "all": tau_gap(x, b, y, seed=seed),
        "negative": tau_gap(x[negative], b[negative], y[negative], seed=seed),
    }


def tau_estimate(result: Mapping[str, float | list[float]]) -> Estimate:
    """An ``Agreement`` dict's tau as an :class:`~irmscope.stats.Estimate` (for tables and plots)."""
    low, high = result["kendall_ci"]
    return Estimate(float(result["kendall_tau"]), float(low), float(high), 0.95, int(result["n"]))
