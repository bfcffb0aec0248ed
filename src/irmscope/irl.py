"""Inverse reinforcement learning of a tuned model's reward from its own completions, after
"Insights from the Inverse: Reconstructing LLM Training Goals Through Inverse RL" (Jagota, Joselowitz,
Krishna et al., 2024).

The tuned model's completions are the expert demonstrations and the base model's the alternative. In the
one-step setting of a completion, KL-regularised RL has a closed-form optimum, ``pi_tuned(y|x) =
pi_base(y|x) exp(r(x, y) / beta) / Z(x)``; maximum-entropy IRL with a linear reward ``r = w . phi`` and the
base policy as the reference therefore maximises the likelihood of the expert's completions under that
family. The log-partition ``log Z(x)`` differs from prompt to prompt and is unknown, so the likelihood is a
*conditional logit within each prompt*: given one expert and one alternative completion of a prompt, the
chance that the expert's is the expert's is ``sigmoid(w . (phi_expert - phi_alternative))``, in which
``Z(x)`` (and anything else constant within the prompt) cancels. The fit is therefore a logistic regression
without intercept on within-prompt feature differences ``d``. A pair's loss is the same entered as ``+d``
labelled 1 or as ``-d`` labelled 0, so each pair is entered once, as one or the other in turn, which gives
the solver two classes (:func:`pair_design`). A prompt with several
completions of each policy contributes every expert-alternative pair: a pairwise (composite) likelihood,
exact for the one-pair-per-prompt coverage set. An unconditional logistic regression of authorship on
``phi`` with one global intercept would instead read between-prompt variation (topic, length of the
prompt) as evidence about the reward. Max-margin IRL asks for the widest margin between expert and
alternative of the same prompt: a linear SVM without intercept on the same differences (a ranking SVM).
Neither sees a known-reward label; both see who wrote each completion.

Penalties are stated as the inverse strength ``C`` of the design that enters every pair twice, as ``+d``
labelled 1 *and* ``-d`` labelled 0 (how irmscope fitted until 2026-12-04): the fit with each pair once runs
at ``2C``, the same objective with half the rows (in the demo's leaderboard stage max-margin took 10.5 s
against 26.8, max-entropy 16.0 against 20.1: docs/findings.md, Benchmarks). The two designs' fits agree
to the solver's tolerance, not to the bit, so where held-out accuracies nearly tie the max-margin search
can pick another penalty than before. In either design liblinear's default tolerance stops the ranking SVM
short of its optimum at the larger penalties (on the demo's read-outs up to 17% above the optimal
objective at ``C = 1``, in a check made outside the repository): the method is that solver at that
tolerance, not the exact SVM.

Ties are broken by rule, not by floating-point accident. Max-margin is scored by cross-validated accuracy,
which takes few values, so several penalties (or read-outs) often tie: scores within :data:`TIE_TOLERANCE`
of the best count as tied, and the tie goes to the strongest penalty (the smallest ``C``: for a ranking
SVM the widest margin) and to the first read-out in the order given. Both solvers run with a fixed seed.

Every fit runs in the row space of its differences (:func:`row_space_basis`). With fewer pairs than
features (200 prompts against a 576-wide residual stream) the differences span far fewer dimensions than
the read-out has, and an L2-penalised linear model without intercept has its weights in that span (the
representer theorem), so fitting the coordinates in an orthonormal basis of the span gives the same
weights and the same penalty as fitting all the features, at a fraction of the cost (about 3x for the
ranking SVM on the demo). The read-outs of one fold are fitted in parallel when the caller allows it with
``joblib.parallel_config(backend=..., n_jobs=...)``: in threads by default (liblinear releases the GIL, but
scikit-learn's Python around it does not), or in processes with ``backend="loky"``, which the leaderboard
uses (naming the backend matters: with ``n_jobs`` alone joblib 1.6 stays in the calling thread); alone they
run one by one. Every fit is deterministic, so the estimate is the same either way.

A recovered reward is defined up to a per-prompt constant and a positive scale; the scale depends on the
penalty, which differs between cross-fitting folds, so :func:`cross_fitted_irl` puts every fold's held-out
scores in units of that fold's own training scores before they are pooled.

A reward recovered this way is not identified: anything that separates the two policies' completions
(length, style, a favourite word) is as good an explanation as the reward. :func:`identifiability`
measures how much recovered rewards agree across resamples of the demonstrations and across feature sets.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.svm import LinearSVC

from irmscope.errors import IrmscopeError

IrlKind = Literal["max-entropy", "max-margin"]
#: inverse regularisation strengths tried (by folds of whole prompts) for both kinds
PENALTIES = np.logspace(-4, 0, 9)
#: cross-validated scores this close to the best are a tie (broken as the module docstring says)
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class LinearReward:
    """``reward(x) = ((x - mean) / scale) @ weights``: a reward over one feature read-out, defined up to a
    constant (no intercept: within a prompt it cancels), centred on the fitting rows' mean.
    ``cv_score`` is the penalty search's cross-validated objective (NaN when the penalty was given)."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    penalty: float
    cv_score: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights

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


def within_prompt_differences(
    features: np.ndarray, expert: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``phi(expert) - phi(alternative)`` for every expert-alternative pair of completions of one prompt,
    and each pair's prompt. Prompts without both kinds of completion carry no conditional information and
    give no rows."""
    diffs, pair_groups = [], []
    for group in np.unique(groups):
        rows = groups == group
        good, other = features[rows & expert], features[rows & ~expert]
        if len(good) and len(other):
            diffs.append((good[:, None, :] - other[None, :, :]).reshape(-1, features.shape[1]))
            pair_groups.append(np.full(len(good) * len(other), group))
    if len({g[0] for g in pair_groups}) < 3:
        raise IrmscopeError("inverse RL needs at least 3 prompts completed by both policies; add more")
    return np.concatenate(diffs), np.concatenate(pair_groups)


def mean_log_likelihood(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
    """The max-entropy search's score: the mean log-likelihood of the held-out labels ``y`` under
    ``model``. It is scikit-learn's ``"neg_log_loss"`` to the last bit (the positive class's probability,
    clipped to [eps, 1 - eps] of its dtype), computed here because that scorer's generic input checks
    cost about a third of the search at smoke size, and because it takes a fold that holds one label
    (which scikit-learn's refuses): for a two-class model."""
    positive = model.predict_proba(x)[:, 1]
    likelihood = np.where(y == model.classes_[1], positive, 1 - positive)
    eps = np.finfo(likelihood.dtype).eps
    return float(np.average(np.log(np.clip(likelihood, eps, 1 - eps))))


def accuracy(model: LinearSVC, x: np.ndarray, y: np.ndarray) -> float:
    """The max-margin search's score: the share of held-out pairs (rows ``x``, labels ``y``: ``+d``
    labelled 1 or ``-d`` labelled 0) whose expert completion ``model`` scores higher, a tie counting half.
    That is scikit-learn's ``"accuracy"`` of the design that enters each pair both ways (its two rows
    disagree only on a tie), without that scorer's input checks (see :func:`mean_log_likelihood`)."""
    margin = model.decision_function(x) * np.where(y == model.classes_[1], 1.0, -1.0)
    return float(np.average((margin > 0) + 0.5 * (margin == 0)))


def _model(kind: IrlKind) -> tuple[LogisticRegression | LinearSVC, Callable[..., float]]:
    """The linear model of an IRL ``kind`` (no intercept: see the module docstring) and the score of its
    own objective."""
    if kind == "max-entropy":
        # conditional logit; liblinear: the same L2-penalised likelihood as lbfgs, ~10x faster here
        model = LogisticRegression(fit_intercept=False, solver="liblinear", max_iter=5000, random_state=0)
        return model, mean_log_likelihood
    if kind == "max-margin":
        return LinearSVC(fit_intercept=False, max_iter=20000, random_state=0), accuracy
    raise IrmscopeError(f"unknown IRL kind {kind!r}; use 'max-entropy' or 'max-margin'")


def first_best(scores: Sequence[float]) -> int:
    """The index of the first score within :data:`TIE_TOLERANCE` of the highest (NaN never wins)."""
    values = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(values).any():
        return 0
    best = np.nanmax(values)
    return int(np.flatnonzero(values >= best - TIE_TOLERANCE)[0])


def _strongest_of_the_best(results: Mapping[str, Any]) -> int:
    """GridSearchCV's choice: among penalties tied on the mean CV score, the smallest ``C``."""
    order = np.argsort(np.asarray(results["param_C"], dtype=np.float64), kind="stable")
    return int(order[first_best(np.asarray(results["mean_test_score"])[order])])


def penalty_search(
    kind: IrlKind, folds: Sequence[tuple[np.ndarray, np.ndarray]], penalties: np.ndarray = PENALTIES
) -> GridSearchCV:
    """The IRL model of ``kind`` with its penalty searched over ``penalties`` (the solver's ``C``) by
    cross-validation over ``folds`` (``(fit rows, held-out rows)``, whole prompts each), scored by its own
    objective; ties go to the strongest penalty."""
    model, scoring = _model(kind)
    # n_jobs=1: the search itself stays serial whatever joblib context the caller set (the read-outs are
    # what cross_fitted_irl spreads over threads; a process pool per search would cost more than it saves)
    return GridSearchCV(
        model, {"C": penalties}, cv=list(folds), scoring=scoring, refit=_strongest_of_the_best, n_jobs=1
    )


@dataclass(frozen=True)
class PairDesign:
    """The rows a fit sees: ``rows`` labelled ``labels``, cross-validated over ``folds``, each pair entered
    ``copies`` times (the solver's ``C`` for a penalty ``p`` is ``2 p / copies``: the module docstring)."""

    rows: np.ndarray
    labels: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    copies: int

    def solver_c(self, penalty: float | np.ndarray) -> float | np.ndarray:
        return penalty * 2 / self.copies

    def penalty(self, solver_c: float) -> float:
        """The penalty a solver's ``C`` stands for: :meth:`solver_c` undone."""
        return solver_c * self.copies / 2


def pair_design(differences: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> PairDesign:
    """Each pair's difference ``d`` once, as ``+d`` labelled True or ``-d`` labelled False, in turn within
    each of ``folds`` (``(fit pairs, held-out pairs)``), so that the solver sees both labels in every fit:
    the whole design's and each fold's fitting pairs. Where no fold of a fitting set holds two pairs (a
    handful of prompts) that can fail, and then each pair is entered both ways."""
    n = len(differences)
    positive = np.ones(n, dtype=bool)
    for held in [held for _, held in folds] or [np.arange(n)]:
        positive[np.sort(held)[1::2]] = False
    if all(len(set(positive[rows].tolist())) == 2 for rows in [np.arange(n), *(fit for fit, _ in folds)]):
        return PairDesign(np.where(positive[:, None], differences, -differences), positive, list(folds), 1)
    both_ways = [(np.r_[fit, fit + n], np.r_[held, held + n]) for fit, held in folds]
    return PairDesign(
        np.concatenate([differences, -differences]), np.repeat([True, False], n), both_ways, copies=2
    )


def row_space_basis(rows: np.ndarray) -> np.ndarray:
    """``[features, rank]``: an orthonormal basis of the span of ``rows`` (directions whose singular value
    is below 1e-10 of the largest are numerically absent and left out)."""
    _, singular, right = np.linalg.svd(rows, full_matrices=False)
    keep = singular > singular[0] * 1e-10 if singular.size and singular[0] > 0 else np.zeros(0, dtype=bool)
    return right[keep].T


def fit_irl(
    features: np.ndarray, expert: np.ndarray, groups: np.ndarray, kind: IrlKind, penalty: float | None = None
) -> LinearReward:
    """A linear reward under which, within each prompt, ``expert`` rows (True: the tuned model's
    completions) are the likely (max-entropy) or the widely separated (max-margin) ones; the penalty
    (inverse strength ``C``) is ``penalty`` or chosen by :func:`penalty_search`.

    Features are scaled by the root mean square of the within-prompt differences, the data the fit sees,
    so the penalty weighs every feature by its within-prompt spread, not by its spread across prompts."""
    x, expert, groups = (
        np.asarray(features, dtype=np.float64),
        np.asarray(expert, dtype=bool),
        np.asarray(groups),
    )
    _check(x, expert, groups)
    diffs, pair_groups = within_prompt_differences(x, expert, groups)
    scale = np.sqrt((diffs**2).mean(0))
    scale[scale == 0] = 1.0
    basis = row_space_basis(diffs / scale)  # exact: see the module docstring
    if basis.shape[1] == 0:  # every difference is zero (both policies wrote the same): nothing to rotate
        basis = np.eye(x.shape[1])
    coordinates = diffs / scale @ basis
    cv_score = float("nan")
    if penalty is None:
        design = pair_design(coordinates, list(GroupKFold(n_splits=3).split(pair_groups, groups=pair_groups)))
        search = penalty_search(kind, design.folds, design.solver_c(PENALTIES)).fit(
            design.rows, design.labels
        )
        model, penalty = search.best_estimator_, design.penalty(float(search.best_params_["C"]))
        cv_score = search.cv_results_["mean_test_score"][search.best_index_]
    else:
        design = pair_design(coordinates)
        model = _model(kind)[0].set_params(C=design.solver_c(penalty)).fit(design.rows, design.labels)
    return LinearReward(basis @ model.coef_[0], x.mean(0), scale, float(penalty), float(cv_score))


def _folds(groups: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds of whole groups, the groups' order shuffled by ``seed`` (so seeds give different folds)."""
    unique = np.random.default_rng(seed).permutation(np.unique(groups))
    fold_of = {g: i % n_folds for i, g in enumerate(unique)}
    which = np.array([fold_of[g] for g in groups])
    return [(np.flatnonzero(which != k), np.flatnonzero(which == k)) for k in range(n_folds)]


def on_training_scale(reward: LinearReward, fit: np.ndarray, held: np.ndarray) -> np.ndarray:
    """``reward`` of the ``held`` rows standardised by the mean and spread of its scores on the ``fit``
    rows it was fitted on.

    Each fold's reward has its own scale (set by its penalty) and origin, so raw out-of-fold scores pooled
    across folds would mix units and the pooled correlations would reward the accident of which prompts
    shared a fold. Training-row statistics fix the units without looking at the held-out rows; ranking
    each fold's held-out scores would instead force every fold onto the same spread and level, discarding
    a real difference between folds whose prompts differ, and would depend on the held-out rows."""
    on_fit = reward(fit)
    spread = on_fit.std()
    return (reward(held) - on_fit.mean()) / (spread if spread > 0 else 1.0)


def cross_fitted_irl(
    features: np.ndarray | Mapping[Hashable, np.ndarray],
    expert: np.ndarray,
    groups: np.ndarray,
    *,
    kind: IrlKind,
    n_folds: int = 5,
    seed: int = 0,
    subsample: float = 1.0,
    penalty: float | None = None,
) -> tuple[np.ndarray, list[LinearReward], list[Hashable]]:
    """Each row's recovered reward from an IRL fit that never saw its prompt (folds of whole prompts), on
    the common scale of :func:`on_training_scale`, the fits and each fold's chosen read-out.

    ``features`` is one read-out or several candidates (e.g. one per layer); with several, each fold picks
    the one whose penalty search on that fold's fitting prompts scores best (nested: neither the read-out
    nor the penalty sees the rows it predicts; a tie goes to the first in the order given).
    ``subsample < 1`` fits each fold on that fraction of its prompts, drawn with ``seed``: the resamples
    :func:`identifiability` compares. ``penalty`` fixes the penalty (else searched per fold; a fixed
    penalty allows one read-out only)."""
    candidates = dict(features) if isinstance(features, Mapping) else {None: features}
    if not candidates:
        raise IrmscopeError("inverse RL needs at least one read-out to fit")
    if penalty is not None and len(candidates) > 1:
        raise IrmscopeError("choosing among read-outs needs the penalty searched; pass penalty=None")
    candidates = {name: np.asarray(x, dtype=np.float64) for name, x in candidates.items()}
    expert, groups = np.asarray(expert, dtype=bool), np.asarray(groups)
    for x in candidates.values():
        _check(x, expert, groups)
    rng = np.random.default_rng(seed)
    out, fits, chosen = np.empty(len(expert)), [], []
    for fit_rows, predict_rows in _folds(groups, min(n_folds, len(np.unique(groups))), seed):
        if subsample < 1:
            prompts = np.unique(groups[fit_rows])
            kept = rng.choice(prompts, round(subsample * len(prompts)), replace=False)
            fit_rows = fit_rows[np.isin(groups[fit_rows], kept)]
        fitted = Parallel(prefer="threads")(
            delayed(fit_irl)(x[fit_rows], expert[fit_rows], groups[fit_rows], kind, penalty)
            for x in candidates.values()
        )
        rewards = dict(zip(candidates, fitted, strict=True))
        names = list(rewards)  # ties go to the first read-out in the order given
        best = names[first_best([rewards[name].cv_score for name in names])] if len(names) > 1 else names[0]
        x = candidates[best]
        out[predict_rows] = on_training_scale(rewards[best], x[fit_rows], x[predict_rows])
        fits.append(rewards[best])
        chosen.append(best)
    return out, fits, chosen


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
            estimate, fits, _ = cross_fitted_irl(
                features, expert, groups, kind=kind, seed=seed, subsample=subsample, penalty=penalty
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
