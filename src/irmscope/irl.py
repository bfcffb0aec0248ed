"""Inverse reinforcement learning of a tuned model's reward from its own completions, after
"Insights from the Inverse: Reconstructing LLM Training Goals Through Inverse RL" (Jagota, Joselowitz,
Krishna et al., 2024).

The tuned model's completions are the expert demonstrations and the base model's the alternative. In the
one-step setting of a completion, KL-regularised RL has a closed-form optimum, ``pi_tuned(y|x) ∝
pi_base(y|x) exp(r(x, y) / beta)``; maximum-entropy IRL with a linear reward ``r = w . phi`` and the base
policy as the reference therefore maximises the likelihood of the expert's completions under that family,
which is logistic regression of "written by the tuned model" on ``phi`` (its logit estimates ``r / beta``
up to a per-prompt constant that every leaderboard metric but the pooled correlations ignores).
Max-margin IRL instead asks for the widest margin between expert and alternative: a linear SVM on the
same features. Neither sees a known-reward label; both see who wrote each completion.

A reward recovered this way is not identified: anything that separates the two policies' completions
(length, style, a favourite word) is as good an explanation as the reward. :func:`identifiability`
measures how much recovered rewards agree across resamples of the demonstrations and across feature sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.svm import LinearSVC

from irmscope.errors import IrmscopeError

IrlKind = Literal["max-entropy", "max-margin"]
#: inverse regularisation strengths tried (by folds of whole prompts) for both kinds
PENALTIES = np.logspace(-4, 0, 9)


@dataclass(frozen=True)
class LinearReward:
    """``reward(x) = ((x - mean) / scale) @ weights + intercept``: a reward over one feature read-out."""

    weights: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    penalty: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.intercept

    @property
    def direction(self) -> np.ndarray:
        """The reward's direction in the raw feature space (unit norm)."""
        raw = self.weights / self.scale
        return raw / np.linalg.norm(raw)


def _check(features: np.ndarray, expert: np.ndarray, groups: np.ndarray) -> None:
    if len(features) != len(expert) or len(expert) != len(groups):
        raise IrmscopeError(f"{len(features)} feature rows, {len(expert)} labels, {len(groups)} groups")
    if len(set(expert.tolist())) != 2:
        raise IrmscopeError("inverse RL needs completions from both the expert and the alternative policy")
    if len(np.unique(groups)) < 3:
        raise IrmscopeError("inverse RL needs completions of at least 3 prompts; add more")


def _model(kind: IrlKind) -> tuple[LogisticRegression | LinearSVC, str]:
    """The linear model of an IRL ``kind`` and the score of its own objective."""
    if kind == "max-entropy":
        return LogisticRegression(max_iter=5000), "neg_log_loss"  # likelihood of authorship
    if kind == "max-margin":
        return LinearSVC(max_iter=20000, random_state=0), "accuracy"
    raise IrmscopeError(f"unknown IRL kind {kind!r}; use 'max-entropy' or 'max-margin'")


def penalty_search(kind: IrlKind, groups: np.ndarray, penalties: np.ndarray = PENALTIES) -> GridSearchCV:
    """The IRL model of ``kind`` with its penalty searched over ``penalties`` by 3-fold cross-validation
    over whole prompts, scored by its own objective."""
    model, scoring = _model(kind)
    folds = list(GroupKFold(n_splits=3).split(groups, groups, groups))
    return GridSearchCV(model, {"C": penalties}, cv=folds, scoring=scoring)


def fit_irl(
    features: np.ndarray, expert: np.ndarray, groups: np.ndarray, kind: IrlKind, penalty: float | None = None
) -> LinearReward:
    """A linear reward under which ``expert`` rows (True: the tuned model's completions) are the likely
    (max-entropy) or the widely separated (max-margin) ones; the penalty (inverse strength ``C``) is
    ``penalty`` or chosen by :func:`penalty_search`."""
    x, expert, groups = (
        np.asarray(features, dtype=np.float64),
        np.asarray(expert, dtype=bool),
        np.asarray(groups),
    )
    _check(x, expert, groups)
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    standard = (x - mean) / scale
    if penalty is None:
        search = penalty_search(kind, groups).fit(standard, expert)
        model, penalty = search.best_estimator_, float(search.best_params_["C"])
    else:
        model = _model(kind)[0].set_params(C=penalty).fit(standard, expert)
    return LinearReward(model.coef_[0].copy(), float(model.intercept_[0]), mean, scale, penalty)


def _folds(groups: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds of whole groups, the groups' order shuffled by ``seed`` (so seeds give different folds)."""
    unique = np.random.default_rng(seed).permutation(np.unique(groups))
    fold_of = {g: i % n_folds for i, g in enumerate(unique)}
    which = np.array([fold_of[g] for g in groups])
    return [(np.flatnonzero(which != k), np.flatnonzero(which == k)) for k in range(n_folds)]


def cross_fitted_irl(
    features: np.ndarray,
    expert: np.ndarray,
    groups: np.ndarray,
    kind: IrlKind,
    n_folds: int = 5,
    seed: int = 0,
    subsample: float = 1.0,
    penalty: float | None = None,
) -> tuple[np.ndarray, list[LinearReward]]:
    """Each row's recovered reward from an IRL fit that never saw its prompt (folds of whole prompts), and
    the fits. ``subsample < 1`` fits each fold on that fraction of its prompts, drawn with ``seed``: the
    resamples :func:`identifiability` compares. ``penalty`` fixes the penalty (else searched per fold)."""
    features, expert, groups = np.asarray(features), np.asarray(expert, dtype=bool), np.asarray(groups)
    _check(features, expert, groups)
    rng = np.random.default_rng(seed)
    out, fits = np.empty(len(expert)), []
    for fit_rows, predict_rows in _folds(groups, min(n_folds, len(np.unique(groups))), seed):
        if subsample < 1:
            kept = rng.choice(
                np.unique(groups[fit_rows]),
                round(subsample * len(np.unique(groups[fit_rows]))),
                replace=False,
            )
            fit_rows = fit_rows[np.isin(groups[fit_rows], kept)]
        reward = fit_irl(features[fit_rows], expert[fit_rows], groups[fit_rows], kind, penalty)
        out[predict_rows] = reward(features[predict_rows])
        fits.append(reward)
    return out, fits


def identifiability(
    feature_sets: Mapping[str, np.ndarray],
    expert: np.ndarray,
    groups: np.ndarray,
    kind: IrlKind = "max-entropy",
    seeds: tuple[int, ...] = (0, 1, 2),
    subsample: float = 0.8,
) -> dict[str, Any]:
    """How much the recovered reward depends on the arbitrary choices of an IRL run.

    Every feature set is fitted with every seed (different folds and an 80% subsample of prompts each; the
    penalty searched once per feature set on all prompts).
    Agreement is the Pearson correlation of two runs' held-out rewards over the same completions: across
    seeds within a feature set (resampling the demonstrations) and across feature sets (other features
    that separate the policies as well). Directions are compared by cosine within a feature set."""
    runs: dict[tuple[str, int], np.ndarray] = {}
    directions: dict[str, list[np.ndarray]] = {}
    for name, features in feature_sets.items():
        penalty = fit_irl(features, expert, groups, kind).penalty  # one per feature set, not per resample
        for seed in seeds:
            estimate, fits = cross_fitted_irl(
                features, expert, groups, kind, seed=seed, subsample=subsample, penalty=penalty
            )
            runs[name, seed] = estimate
            directions.setdefault(name, []).extend(fit.direction for fit in fits)

    def agreement(pairs: list[tuple[tuple[str, int], tuple[str, int]]]) -> float:
        return float(np.mean([np.corrcoef(runs[a], runs[b])[0, 1] for a, b in pairs]))

    keys = list(runs)
    within = {
        name: agreement([(a, b) for a, b in combinations(keys, 2) if a[0] == b[0] == name])
        for name in feature_sets
    }
    across = {
        f"{x} vs {y}": agreement([((x, s), (y, s)) for s in seeds]) for x, y in combinations(feature_sets, 2)
    }
    cosines = {
        name: float(np.mean([abs(a @ b) for a, b in combinations(vectors, 2)]))
        for name, vectors in directions.items()
    }
    return {
        "kind": kind,
        "seeds": list(seeds),
        "subsample": subsample,
        "agreement_across_seeds": within,
        "agreement_across_feature_sets": across,
        "direction_cosine_across_fits": cosines,
        "estimates": {f"{name}/seed{seed}": values for (name, seed), values in runs.items()},
    }
