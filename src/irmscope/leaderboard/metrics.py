"""How close a reward estimate is to the known reward, on one set of completions, with uncertainty.

Every metric is computed on the same *coverage set*: held-out prompts, each completed once by the base
model and once by the tuned model. Intervals come from one bootstrap over prompts (a prompt's completions
are resampled together), so all metrics of one estimate share their resamples.

* **Pearson, Spearman, Kendall** between estimated and true reward over all completions.
* **Pearson within policy**: the mean of the Pearson r over the base model's completions and over the tuned
  model's. The tuned model's completions have higher reward *and* are recognisably the tuned model's, so an
  estimate that only detects which model wrote a completion already scores well on the pooled metrics and
  on preference accuracy; within one policy it cannot.
* **Preference accuracy**: over the pairs of completions of one prompt whose true rewards differ, the share
  the estimate orders the same way (a tie in the estimate counts one half): what a reward model is used for.
* **EPIC distance** (Gleave et al. 2021, "Quantifying differences in reward functions"): the Pearson
  distance ``sqrt((1 - rho) / 2)`` between the two rewards after *canonicalisation*, which removes
  potential shaping, so rewards that induce the same optimal policies are at distance 0. A completion is one
  step of a contextual bandit: state = prompt, action = completion, next state terminal (potential 0). The
  canonical reward is then ``C(R)(s, a) = R(s, a) - E_{A ~ D_A} R(s, A)`` up to a constant: each reward
  minus its mean over the coverage distribution's completions of the same prompt. Here ``D_A`` is the
  uniform mixture of the base and the tuned policy (one sample of each per prompt), so a reward that only
  adds a per-prompt offset (any shaping term) is at distance 0, and 0 <= EPIC <= 1.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats

from irmscope.errors import IrmscopeError
from irmscope.probes.ridge import pearson, weighted_pearsons

METRICS = ("pearson", "spearman", "kendall", "pearson_within_policy", "preference_accuracy", "epic")


def canonicalize(rewards: np.ndarray, prompt_index: np.ndarray) -> np.ndarray:
    """EPIC's canonical reward for one-step episodes: each reward minus its prompt's mean."""
    rewards = np.asarray(rewards, dtype=np.float64)
    _, inverse = np.unique(prompt_index, return_inverse=True)
    means = np.bincount(inverse, weights=rewards) / np.bincount(inverse)
    return rewards - means[inverse]


def _correlation(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    if kind == "pearson":
        return pearson(a, b)
    if kind == "spearman":  # Pearson's r of the ranks (ties share their mean rank), as scipy's spearmanr
        return pearson(stats.rankdata(a), stats.rankdata(b))
    return float(stats.kendalltau(a, b).statistic)


def _ordered_pairs(
    true: np.ndarray, estimate: np.ndarray, prompt_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt (in sorted order): its id; among the pairs of its completions whose true rewards differ,
    how many ``estimate`` orders the same way (a tie counts one half); and how many such pairs there are.
    Each prompt's counts depend on its own completions only, so a bootstrap over prompts reweights them
    instead of recounting pairs."""
    prompts, inverse = np.unique(prompt_index, return_inverse=True)
    correct, total = np.zeros(len(prompts)), np.zeros(len(prompts))
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    for k, rows in enumerate(np.split(order, bounds)):
        t, e = true[rows], estimate[rows]
        i, j = np.triu_indices(len(rows), k=1)
        differs = t[i] != t[j]
        agreement = np.sign(t[i] - t[j])[differs] * np.sign(e[i] - e[j])[differs]
        correct[k] = float((agreement > 0).sum() + 0.5 * (agreement == 0).sum())
        total[k] = float(differs.sum())
    return prompts, correct, total


def _share(correct: float, total: float) -> float:
    return float(correct / total) if total else float("nan")


def preference_accuracy(true: np.ndarray, estimate: np.ndarray, prompt_index: np.ndarray) -> float:
    """Share of same-prompt pairs with different true rewards that ``estimate`` orders correctly."""
    _, correct, total = _ordered_pairs(true, estimate, prompt_index)
    return _share(correct.sum(), total.sum())


def _epic(canonical_true: np.ndarray, canonical_estimate: np.ndarray) -> float:
    rho = _correlation("pearson", canonical_true, canonical_estimate)
    return float(np.sqrt(max(0.0, (1.0 - rho) / 2.0))) if np.isfinite(rho) else float("nan")


def epic_distance(true: np.ndarray, estimate: np.ndarray, prompt_index: np.ndarray) -> float:
    """EPIC pseudometric between two rewards over the coverage set (see the module docstring)."""
    return _epic(canonicalize(true, prompt_index), canonicalize(estimate, prompt_index))


def pearson_within(true: np.ndarray, estimate: np.ndarray, policy: np.ndarray) -> float:
    """Mean over policies of the Pearson r among that policy's completions (see the module docstring)."""
    values = [_correlation("pearson", true[policy == p], estimate[policy == p]) for p in np.unique(policy)]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def _metrics(
    true: np.ndarray,
    estimate: np.ndarray,
    policy: np.ndarray,
    canonical: tuple[np.ndarray, np.ndarray],
    preference: float,
) -> dict[str, float]:
    """Every metric from the completions' rewards, their canonical rewards (true, estimate) and the
    preference accuracy: the last two need the prompts, so they come computed (see
    :func:`score_estimate`)."""
    return {
        "pearson": _correlation("pearson", true, estimate),
        "spearman": _correlation("spearman", true, estimate),
        "kendall": _correlation("kendall", true, estimate),
        "pearson_within_policy": pearson_within(true, estimate, policy),
        "preference_accuracy": preference,
        "epic": _epic(*canonical),
    }


def point_metrics(
    true: np.ndarray, estimate: np.ndarray, prompt_index: np.ndarray, policy: np.ndarray
) -> dict[str, float]:
    canonical = canonicalize(true, prompt_index), canonicalize(estimate, prompt_index)
    return _metrics(true, estimate, policy, canonical, preference_accuracy(true, estimate, prompt_index))


def _resampled_metrics(
    true: np.ndarray,
    estimate: np.ndarray,
    policy: np.ndarray,
    canonical: tuple[np.ndarray, np.ndarray],
    weights: np.ndarray,
) -> dict[str, np.ndarray]:
    """:func:`_metrics` but preference accuracy, on every resample at once: ``weights`` (``[resamples,
    completions]``) counts how often each completion was drawn. A resample is the sample that repeats each
    completion that often, so each metric is its weighted form: the same numbers as computing it on the
    repeated rows (Kendall's counts exactly; the correlations to rounding), without a loop over resamples."""
    within = [
        weighted_pearsons(true[rows], estimate[rows], weights[:, rows]) for rows in _policy_rows(policy)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no defined policy: NaN, counted
        pearson_within = np.nanmean(np.stack(within), axis=0)
    epic = np.sqrt(np.maximum(0.0, (1.0 - weighted_pearsons(*canonical, weights)) / 2.0))
    return {
        "pearson": weighted_pearsons(true, estimate, weights),
        "spearman": weighted_pearsons(
            _weighted_ranks(true, weights), _weighted_ranks(estimate, weights), weights
        ),
        "kendall": _weighted_kendall(true, estimate, weights),
        "pearson_within_policy": pearson_within,
        "epic": epic,
    }


def _policy_rows(policy: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(policy == p) for p in np.unique(policy)]


def _value_counts(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How often each row of ``weights`` drew each of ``values``' distinct values, in ascending order
    (``[resamples, distinct]``), and each value's index among them."""
    distinct, index = np.unique(values, return_inverse=True)
    counts = np.zeros((len(weights), len(distinct)))
    np.add.at(counts.T, index, weights.T)
    return counts, index


def _weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[resamples, n]``: each value's rank among the values a row of ``weights`` drew, ties sharing their
    mean rank (``scipy.stats.rankdata``'s, on the repeated values)."""
    counts, index = _value_counts(values, weights)
    below = np.cumsum(counts, axis=1) - counts
    return (below + (counts + 1) / 2)[:, index]


#: sign-matrix entries (completions x completions) one block of Kendall's counts holds at most
_KENDALL_CELLS = 1 << 22


def _weighted_kendall(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of ``x`` and ``y`` per row of ``weights``, on the repeated values: scipy's
    ``kendalltau`` formula from the same whole-number counts (concordant minus discordant pairs, pairs tied
    in ``x`` and in ``y``), so the same floats; NaN where fewer than 3 values were drawn or either side is
    constant among them. The pair counts are quadratic in the completions (in blocks, to bound memory):
    cheaper than a scipy call per resample for coverage sets of hundreds to a few thousand completions,
    not for tens of thousands."""
    n = len(x)
    block = max(1, _KENDALL_CELLS // max(n, 1))
    difference = np.zeros(len(weights))  # concordant minus discordant pairs, each pair counted twice
    for start in range(0, n, block):
        columns = slice(start, start + block)
        signs = np.sign(x[:, None] - x[None, columns]) * np.sign(y[:, None] - y[None, columns])
        difference += ((weights @ signs) * weights[:, columns]).sum(1)
    drawn = weights.sum(1)
    pairs = drawn * (drawn - 1) / 2
    x_ties, y_ties = ((c * (c - 1) / 2).sum(1) for c in (_value_counts(v, weights)[0] for v in (x, y)))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (difference / 2) / np.sqrt(pairs - x_ties) / np.sqrt(pairs - y_ties)
    undefined = (drawn < 3) | (x_ties == pairs) | (y_ties == pairs)
    return np.where(undefined, np.nan, np.clip(tau, -1.0, 1.0))


def score_estimate(
    true: np.ndarray,
    estimate: np.ndarray,
    prompt_index: np.ndarray,
    policy: np.ndarray | None = None,
    n_resamples: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Every metric of ``estimate`` against ``true`` with a percentile bootstrap interval over prompts;
    ``policy`` names the model that wrote each completion (default: one policy).

    A resample draws prompts with replacement and keeps each drawn copy as a prompt of its own. The
    prompt-level parts (each completion's canonical reward, each prompt's ordered pairs) are therefore
    the same in every resample and are computed once: the resample reweights them, which gives the same
    numbers as recomputing them. Every metric of every resample is then computed at once in its weighted
    form (:func:`_resampled_metrics`), which is what makes 500 resamples cheap."""
    true, estimate = np.asarray(true, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    prompt_index = np.asarray(prompt_index)
    policy = np.zeros(len(true), dtype=int) if policy is None else np.asarray(policy)
    if not (len(true) == len(estimate) == len(prompt_index) == len(policy)) or len(true) == 0:
        raise IrmscopeError(
            f"an estimate needs one value per completion: {len(estimate)} estimates for {len(true)} rewards"
        )
    if not np.isfinite(estimate).all():
        raise IrmscopeError("the reward estimate contains NaN or infinity; check the method's output")
    if not np.isfinite(true).all():
        raise IrmscopeError("the known rewards contain NaN or infinity; check the reward's scores")
    if n_resamples < 1:
        raise IrmscopeError(f"the bootstrap needs at least 1 resample; got n_resamples={n_resamples}")
    prompts, correct, total = _ordered_pairs(true, estimate, prompt_index)
    canonical = canonicalize(true, prompt_index), canonicalize(estimate, prompt_index)
    point = _metrics(true, estimate, policy, canonical, _share(correct.sum(), total.sum()))
    rng = np.random.default_rng(seed)
    chosen = np.stack([rng.choice(prompts, size=len(prompts), replace=True) for _ in range(n_resamples)])
    copies = np.stack([np.bincount(row, minlength=len(prompts)) for row in np.searchsorted(prompts, chosen)])
    with np.errstate(invalid="ignore", divide="ignore"):
        preference = (copies @ correct) / (copies @ total)  # NaN where no pair's true rewards differ
    draws = _resampled_metrics(
        true, estimate, policy, canonical, copies[:, np.searchsorted(prompts, prompt_index)]
    )
    draws["preference_accuracy"] = preference
    alpha = (1 - level) / 2
    out: dict[str, dict[str, Any]] = {}
    for name in METRICS:
        values = draws[name]
        finite = np.isfinite(values)
        low, high = np.quantile(values[finite], [alpha, 1 - alpha]) if finite.any() else (np.nan, np.nan)
        out[name] = {
            "value": point[name],
            "low": float(low),
            "high": float(high),
            "n": int(len(prompts)),
            # resamples where the metric is undefined (e.g. a constant estimate within a policy) are left out
            # of the interval; how many is reported, since many of them make the interval unreliable
            "n_nan_resamples": int((~finite).sum()),
        }
    return out
