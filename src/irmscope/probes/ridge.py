"""Linear reward probes: ridge regression with cross-validated regularisation, scored on held-out texts.

Every probe is fitted on one set of texts and scored on texts it never saw, next to the same probe fitted on
shuffled labels (how far a 576-dimensional regression gets on noise at this sample size). Splits are by
*group* (the prompt a completion answers), so no prompt is on both sides.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold
from threadpoolctl import ThreadpoolController

from irmscope.errors import IrmscopeError
from irmscope.stats import Estimate

ALPHAS = np.logspace(-1, 5, 13)
N_SHUFFLES = 20

_T = TypeVar("_T")
_R = TypeVar("_R")
_BLAS = ThreadpoolController()
_WORKER = threading.local()  # busy: this thread is one of in_threads' workers


def in_threads(function: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``[function(item) for item in items]``, in that order, spread over as many threads as torch may use
    (the cores in a run, one in each test worker), each with one BLAS thread. Ridge's eigendecompositions
    of a few hundred rows barely use a second BLAS thread, so on the 2-core machine two at once are 1.7x as
    fast over the candidate read-outs of one fold, and 1.2x over the five folds of one cross-validation.
    Where both levels call it, the outer one spreads: a call from inside a worker runs in that worker (each
    call has its own pool, so a worker's mark ends with it). The results are the loop's, to BLAS rounding."""
    workers = min(len(items), torch.get_num_threads())
    if workers <= 1 or getattr(_WORKER, "busy", False):  # a call inside a worker runs in it
        return [function(item) for item in items]

    def run(item: _T) -> _R:
        _WORKER.busy = True
        return function(item)

    with _BLAS.limit(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, items))


@dataclass(frozen=True)
class LinearProbe:
    """``predict(x) = x @ direction + intercept`` in the activation space's own units."""

    direction: np.ndarray
    intercept: float
    alpha: float
    train_mse: float  # cross-validated MSE on the training rows at the chosen alpha (for choosing layers)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.direction + self.intercept


@dataclass(frozen=True)
class _Spectrum:
    """Ridge at any penalty from one eigendecomposition of the centred fitting rows' smaller Gram matrix
    (rows x rows in the dual form when they are fewer than the features, features x features otherwise):
    ``projected_y`` is the targets in the eigenbasis, so a penalty costs a rescaling of ``projected_y``
    instead of a solve. Rows mapped into the eigenbasis (:class:`_FeatureSpectrum`, or a fold's products
    with its fitting rows, :class:`_RowKernel`) get their predictions from :meth:`predictions`."""

    mean_y: np.ndarray
    eigen: np.ndarray
    spanned: np.ndarray
    projected_y: np.ndarray  # [eigen, targets]

    @classmethod
    def of(
        cls, gram: np.ndarray, project_targets: Callable[[np.ndarray], np.ndarray], mean_y: np.ndarray
    ) -> tuple[_Spectrum, np.ndarray]:
        """The spectrum of ``gram`` and its eigenvectors; ``project_targets(basis)`` puts the centred
        targets into the eigenbasis."""
        eigen, basis = np.linalg.eigh(gram)
        eigen = np.clip(eigen, 0.0, None)
        spanned = eigen > eigen.max(initial=0.0) * len(eigen) * np.finfo(float).eps
        return cls(mean_y, eigen, spanned, project_targets(basis)), basis

    def inverse(self, alpha: float | np.ndarray) -> np.ndarray:
        """``1 / (eigen + alpha)`` on the spanned directions, 0 elsewhere: ``[eigen]`` for one penalty,
        ``[eigen, targets]`` for one per target."""
        alpha = np.asarray(alpha, dtype=np.float64)
        eigen = self.eigen.reshape(-1, *[1] * alpha.ndim)
        spanned = self.spanned.reshape(eigen.shape)
        return np.where(spanned, 1.0 / np.where(spanned, eigen + alpha, 1.0), 0.0)

    def predictions(self, held: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """``[alphas, held, targets]`` predictions for rows given in the eigenbasis (``[held, eigen]``)."""
        return np.stack([held @ (self.projected_y * self.inverse(a)[:, None]) + self.mean_y for a in alphas])


@dataclass(frozen=True)
class _FeatureSpectrum:
    """:class:`_Spectrum` of fitting rows given as features, with the map from the eigenbasis to feature
    space (``to_features``), which gives the weights (:meth:`coefficients`) and places new rows."""

    mean_x: np.ndarray
    to_features: np.ndarray  # [features, eigen]
    spectrum: _Spectrum

    @classmethod
    def of(cls, x_fit: np.ndarray, y_fit: np.ndarray) -> _FeatureSpectrum:
        mean_x, mean_y = x_fit.mean(0), y_fit.mean(0)
        centred, targets = x_fit - mean_x, y_fit - mean_y
        if centred.shape[0] < centred.shape[1]:  # dual: X^T (X X^T + a)^-1 y
            spectrum, basis = _Spectrum.of(centred @ centred.T, lambda b: b.T @ targets, mean_y)
            return cls(mean_x, centred.T @ basis, spectrum)
        # primal: (X^T X + a)^-1 X^T y
        spectrum, basis = _Spectrum.of(centred.T @ centred, lambda b: b.T @ (centred.T @ targets), mean_y)
        return cls(mean_x, basis, spectrum)

    def coefficients(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[features, targets]`` weights and ``[targets]`` intercepts, each target at its own penalty."""
        inverse = self.spectrum.inverse(np.asarray(alphas, dtype=np.float64))  # [eigen, targets]
        coef = self.to_features @ (self.spectrum.projected_y * inverse)
        return coef, self.spectrum.mean_y - self.mean_x @ coef


@dataclass(frozen=True)
class _RowKernel:
    """Every row's products with every other (``[rows, rows]``, about the mean of all rows), from which a
    fold's dual-form ridge follows without another product over the features: about the fitting rows'
    mean ``m``, ``(x_i - m)·(x_j - m) = K_ij - r_i - r_j + c`` with ``r_i = x_i·m`` the mean of row ``i``'s
    products with the fitting rows and ``c = m·m`` the mean of those. K-fold cross-validation of wide rows
    (the elicitation's 4,608 SAE features on about 1,400 rows) then costs one product for all folds, not
    two a fold (the Gram matrix and the map to feature space), and each fold an eigendecomposition.
    Centring on all rows' mean first keeps the subtraction from cancelling when features sit far from 0."""

    kernel: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> _RowKernel:
        centred = x - x.mean(0)
        return cls(centred @ centred.T)

    def predictions(
        self, fit: np.ndarray, held: np.ndarray, y_fit: np.ndarray, alphas: np.ndarray
    ) -> np.ndarray:
        """:func:`ridge_predictions` for rows ``held`` from a fit on rows ``fit`` (indices into the rows)."""
        fit_products, held_products = self.kernel[np.ix_(fit, fit)], self.kernel[np.ix_(held, fit)]
        fit_means, held_means = fit_products.mean(1), held_products.mean(1)
        square = fit_means.mean()
        gram = fit_products - fit_means[:, None] - fit_means[None, :] + square
        cross = held_products - held_means[:, None] - fit_means[None, :] + square  # [held, fit]
        mean_y = y_fit.mean(0)
        spectrum, basis = _Spectrum.of(gram, lambda b: b.T @ (y_fit - mean_y), mean_y)
        return spectrum.predictions(cross @ basis, alphas)


def ridge_predictions(
    x_fit: np.ndarray, y_fit: np.ndarray, x_held: np.ndarray, alphas: np.ndarray = ALPHAS
) -> np.ndarray:
    """Ridge predictions for ``x_held`` at every penalty in ``alphas`` (``[alphas, held, targets]``),
    from one eigendecomposition (:class:`_Spectrum`), so the whole penalty grid costs one decomposition. A
    penalty of 0 is the minimum-norm least-squares fit (directions the fitting rows do not span get no
    weight), i.e. ordinary least squares with an intercept."""
    fitted = _FeatureSpectrum.of(x_fit, y_fit)
    return fitted.spectrum.predictions((x_held - fitted.mean_x) @ fitted.to_features, alphas)


def group_cv_mse(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int = 5, alphas: np.ndarray = ALPHAS
) -> np.ndarray:
    """Mean squared error of ridge at every penalty in ``alphas`` (``[alphas, targets]``, ``y`` as
    ``[rows, targets]``), by K-fold cross-validation with every group wholly in one fold: rows of one
    group (the completions of one prompt, the tokens of one text) are alike and often share their target,
    so leaving one row out would let its twins vouch for it and favour too small a penalty. Where every
    fold fits fewer rows than there are features, the folds share one :class:`_RowKernel`."""
    n_folds = min(n_folds, len(np.unique(groups)))
    if n_folds < 2:
        raise IrmscopeError(
            "cross-validation by group needs at least 2 groups (prompts/texts); add more data"
        )
    folds = list(GroupKFold(n_splits=n_folds).split(x, y, groups))
    if max(len(fit) for fit, _ in folds) < x.shape[1]:
        kernel = _RowKernel.of(x)

        def predicted(fit: np.ndarray, held: np.ndarray) -> np.ndarray:
            return kernel.predictions(fit, held, y[fit], alphas)
    else:

        def predicted(fit: np.ndarray, held: np.ndarray) -> np.ndarray:
            return ridge_predictions(x[fit], y[fit], x[held], alphas)

    def fold_error(rows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        fit_rows, held_rows = rows
        return ((predicted(fit_rows, held_rows) - y[held_rows]) ** 2).sum(1)

    squared = np.zeros((len(alphas), y.shape[1]))
    for error in in_threads(fold_error, folds):
        squared += error  # in fold order, as one loop would add them
    return squared / len(y)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features scaled to mean 0 and variance 1 (constant ones left unscaled), with the mean and scale."""
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    return (x - mean) / scale, mean, scale


def _ridge(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge of one target (``y`` 1-D) or several at once (columns), each with its own cross-validated
    penalty: direction(s) and intercept(s) in the raw units of ``x``, the penalties and their CV MSEs.

    Without ``groups`` the penalty is chosen by efficient leave-one-out (rows independent); with them, by
    :func:`group_cv_mse`."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or len(x) != len(y):
        raise IrmscopeError(f"a probe needs at least 3 rows with one target each; got {len(x)} and {len(y)}")
    if not np.isfinite(y).all():
        raise IrmscopeError("probe targets contain NaN or infinity; check the reward scores")
    standard, mean, scale = _standardise(x)
    if groups is None:
        model = RidgeCV(alphas=ALPHAS, store_cv_results=True, alpha_per_target=y.ndim == 2)
        model.fit(standard, y)
        alphas = np.atleast_1d(model.alpha_)
        cv = model.cv_results_.reshape(len(x), -1, len(ALPHAS))  # [rows, targets, alphas]
        cv_mse = np.array([cv[:, t, list(ALPHAS).index(a)].mean() for t, a in enumerate(alphas)])
        coef, intercept = model.coef_, model.intercept_
    else:
        columns = y.reshape(len(y), -1)
        mse = group_cv_mse(standard, columns, np.asarray(groups))  # [alphas, targets]
        chosen = mse.argmin(0)
        alphas, cv_mse = ALPHAS[chosen], mse[chosen, np.arange(mse.shape[1])]
        # each target's ridge at its own penalty from one decomposition (not one solve per target)
        weights, intercepts = _FeatureSpectrum.of(standard, columns).coefficients(alphas)
        coef, intercept = (weights.T, intercepts) if y.ndim == 2 else (weights[:, 0], intercepts[0])
    direction = coef / scale  # [d] or [targets, d]
    return direction, intercept - direction @ mean, alphas, cv_mse


def fit_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LinearProbe:
    """Ridge on standardised features, the penalty chosen over :data:`ALPHAS` by leave-one-out, or by
    folds of whole groups when rows come in groups that share a target (see :func:`group_cv_mse`)."""
    direction, intercept, alpha, cv_mse = _ridge(x, np.asarray(y, dtype=np.float64).ravel(), groups)
    return LinearProbe(direction, float(intercept), float(alpha[0]), float(cv_mse[0]))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r (NaN when either side is constant or has fewer than 2 values). Plain numpy: scipy's
    ``pearsonr`` gives the same r with a p-value and checks, at about 10x the cost of a call, and the
    leaderboard's bootstrap and the probes' shuffled controls make thousands of calls."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip((a @ b) / np.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


def weighted_pearsons(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One Pearson r of ``x`` and ``y`` per row of ``weights`` (``[resamples, n]``, how often each value
    was drawn): the r of the sample that repeats each value that often, so a bootstrap is one computation.
    ``x`` and ``y`` are ``[n]``, or ``[resamples, n]`` where a value depends on the resample (ranks). NaN
    where fewer than 3 values were drawn or either side is constant among those drawn (tested on the drawn
    values themselves: a weighted mean of equal floats need not equal them)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    drawn = weights > 0
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a row that drew nothing: NaN, as below
        a = x - (weights * x).sum(1, keepdims=True) / total[:, None]
        b = y - (weights * y).sum(1, keepdims=True) / total[:, None]
        r = (weights * a * b).sum(1) / np.sqrt((weights * a * a).sum(1) * (weights * b * b).sum(1))
    constant = (_drawn_spread(x, drawn) == 0) | (_drawn_spread(y, drawn) == 0)
    return np.where((total < 3) | constant, np.nan, np.clip(r, -1.0, 1.0))


def _drawn_spread(values: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Per row of ``drawn`` (``[resamples, n]``), the range of the ``values`` it drew (0 when none)."""
    high = np.where(drawn, values, -np.inf).max(1)
    low = np.where(drawn, values, np.inf).min(1)
    return np.where(drawn.any(1), high - low, 0.0)


def pearson_ci(
    truth: np.ndarray,
    predicted: np.ndarray,
    groups: np.ndarray | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Pearson r of held-out predictions with a percentile bootstrap interval that resamples whole
    ``groups`` (default: each row alone). Resampling groups with replacement weights each row by how often
    its group was drawn, so all resamples are one weighted-correlation computation."""
    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    point = pearson(truth, predicted)
    if not np.isfinite(point):
        return Estimate(point, point, point, level, len(truth))
    _, group_of = np.unique(np.arange(len(truth)) if groups is None else groups, return_inverse=True)
    n_groups = int(group_of.max()) + 1
    draws = np.random.default_rng(seed).multinomial(n_groups, np.full(n_groups, 1 / n_groups), n_resamples)
    r = weighted_pearsons(truth, predicted, draws[:, group_of])
    r = r[np.isfinite(r)]
    alpha = (1 - level) / 2
    low, high = np.quantile(r, [alpha, 1 - alpha]) if len(r) else (np.nan, np.nan)
    return Estimate(point, float(low), float(high), level, n_groups)


def group_split(groups: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train/test masks with every group wholly on one side (seeded)."""
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if len(unique) < 2:
        raise IrmscopeError("a held-out split needs at least 2 groups (prompts/texts); add more data")
    rng = np.random.default_rng(seed)
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    test_groups = rng.choice(unique, size=n_test, replace=False)
    test = np.isin(groups, test_groups)
    return ~test, test


def held_out_score(
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit on ``train`` rows, score on ``test`` rows, beside the same fit on shuffled training labels.
    ``groups`` (one per row) choose the penalty by group folds and make the interval resample groups.

    One shuffle is a noisy control when the data form clusters with different targets (base and tuned
    completions): a fit to shuffled labels then mostly learns the cluster direction with a random sign, so a
    single control r can be far from 0 either way. The control is therefore :data:`N_SHUFFLES` shuffles
    (fitted together, one penalty each): their mean r, and the 95% range that a probe's r must leave.
    """
    train_groups = None if groups is None else np.asarray(groups)[train]
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(y[train]) for _ in range(N_SHUFFLES)], axis=1)
    # the probe and its controls are one fit of several targets on the same rows (one decomposition per
    # fold); each target keeps its own penalty, so the probe is the one fit_probe gives
    directions, intercepts, alphas, cv_mse = _ridge(
        x[train], np.column_stack([np.asarray(y[train], dtype=np.float64), shuffled]), train_groups
    )
    probe = LinearProbe(directions[0], float(intercepts[0]), float(alphas[0]), float(cv_mse[0]))
    predicted = probe.predict(x[test])
    controls = np.asarray(x[test], dtype=np.float64) @ directions[1:].T + intercepts[1:]  # [test, shuffles]
    control_r = np.array([pearson(y[test], c) for c in controls.T])
    control_r = control_r[np.isfinite(control_r)]  # constant predictions (features that never vary) have none
    test_groups = None if groups is None else np.asarray(groups)[test]
    return {
        "probe": probe,
        "predicted": predicted,
        "pearson": pearson_ci(y[test], predicted, test_groups, seed=seed).as_dict(),
        "mae": float(np.abs(predicted - y[test]).mean()),
        "shuffled_pearson": float(control_r.mean()) if len(control_r) else float("nan"),
        "shuffled_pearson_range": (
            [float(v) for v in np.quantile(control_r, [0.025, 0.975])] if len(control_r) else [np.nan] * 2
        ),
        "shuffled_mae": float(np.abs(controls - y[test][:, None]).mean()),
        "train_cv_mse": probe.train_mse,
        "alpha": probe.alpha,
    }


def cross_fitted(
    candidates: Mapping[str, np.ndarray], y: np.ndarray, groups: np.ndarray, n_folds: int = 5
) -> tuple[np.ndarray, list[str]]:
    """Out-of-fold predictions for every row (folds by group), so each row is predicted by a probe that
    never saw its group: the probe's reward estimate for a set of completions without leakage.

    ``candidates`` are the read-outs a probe may use (e.g. every layer at every position); inside each fold
    the one with the lowest group-CV error *on that fold's fitting rows* is chosen, so the choice sees no
    label of the rows it predicts either. Returns the predictions and each fold's choice."""
    y, groups = np.asarray(y, dtype=np.float64), np.asarray(groups)
    n_folds = min(n_folds, len(np.unique(groups)))
    if n_folds < 2:
        raise IrmscopeError("cross-fitting needs at least 2 groups (prompts); add more completions")
    if not candidates:
        raise IrmscopeError("cross-fitting needs at least one read-out to fit")
    out, chosen = np.empty(len(y)), []
    first = next(iter(candidates.values()))
    for fit_rows, predict_rows in GroupKFold(n_splits=n_folds).split(first, y, groups):

        def error(x: np.ndarray) -> float:
            standard = _standardise(np.asarray(x[fit_rows], np.float64))[0]  # noqa: B023 (used at once)
            return float(group_cv_mse(standard, y[fit_rows, None], groups[fit_rows]).min())  # noqa: B023

        errors = dict(zip(candidates, in_threads(error, list(candidates.values())), strict=True))
        best = min(errors, key=errors.__getitem__)
        x = candidates[best]
        out[predict_rows] = fit_probe(x[fit_rows], y[fit_rows], groups[fit_rows]).predict(x[predict_rows])
        chosen.append(best)
    return out, chosen
