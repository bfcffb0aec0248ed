"""Linear reward probes: ridge regression with cross-validated regularisation, scored on held-out texts.

Every probe is fitted on one set of texts and scored on texts it never saw, next to the same probe fitted on
shuffled labels (how far a 576-dimensional regression gets on noise at this sample size). Splits are by
*group* (the prompt a completion answers), so no prompt is on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold

from irmscope.errors import IrmscopeError
from irmscope.stats import Estimate

ALPHAS = np.logspace(-1, 5, 13)
N_SHUFFLES = 20


@dataclass(frozen=True)
class LinearProbe:
    """``predict(x) = x @ direction + intercept`` in the activation space's own units."""

    direction: np.ndarray
    intercept: float
    alpha: float
    train_mse: float  # leave-one-out MSE on the training rows at the chosen alpha (for choosing layers)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.direction + self.intercept


def _ridge(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge of one target (``y`` 1-D) or several at once (columns), each with its own leave-one-out
    penalty: direction(s) and intercept(s) in the raw units of ``x``, the penalties and their LOO MSEs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or len(x) != len(y):
        raise IrmscopeError(f"a probe needs at least 3 rows with one target each; got {len(x)} and {len(y)}")
    if not np.isfinite(y).all():
        raise IrmscopeError("probe targets contain NaN or infinity; check the reward scores")
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    model = RidgeCV(alphas=ALPHAS, store_cv_results=True, alpha_per_target=y.ndim == 2)
    model.fit((x - mean) / scale, y)
    alphas = np.atleast_1d(model.alpha_)
    cv = model.cv_results_.reshape(len(x), -1, len(ALPHAS))  # [rows, targets, alphas]
    loo_mse = np.array([cv[:, t, list(ALPHAS).index(a)].mean() for t, a in enumerate(alphas)])
    direction = model.coef_ / scale  # [d] or [targets, d]
    return direction, model.intercept_ - direction @ mean, alphas, loo_mse


def fit_probe(x: np.ndarray, y: np.ndarray) -> LinearProbe:
    """Ridge on standardised features, the penalty chosen by efficient leave-one-out over :data:`ALPHAS`."""
    direction, intercept, alpha, loo_mse = _ridge(x, np.asarray(y, dtype=np.float64).ravel())
    return LinearProbe(direction, float(intercept), float(alpha[0]), float(loo_mse[0]))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(stats.pearsonr(a, b).statistic)


def pearson_ci(
    truth: np.ndarray, predicted: np.ndarray, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Pearson r of held-out predictions with a percentile bootstrap interval over the held-out texts
    (vectorised: one matrix of resampled indices)."""
    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    point = pearson(truth, predicted)
    if not np.isfinite(point):
        return Estimate(point, point, point, level, len(truth))
    index = np.random.default_rng(seed).integers(0, len(truth), size=(n_resamples, len(truth)))
    a, b = truth[index], predicted[index]
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    r = r[np.isfinite(r)]
    alpha = (1 - level) / 2
    low, high = np.quantile(r, [alpha, 1 - alpha])
    return Estimate(point, float(low), float(high), level, len(truth))


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
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """Fit on ``train`` rows, score on ``test`` rows, beside the same fit on shuffled training labels.

    One shuffle is a noisy control when the data form clusters with different targets (base and tuned
    completions): a fit to shuffled labels then mostly learns the cluster direction with a random sign, so a
    single control r can be far from 0 either way. The control is therefore :data:`N_SHUFFLES` shuffles
    (fitted together, one penalty each): their mean r, and the 95% range that a probe's r must leave.
    """
    probe = fit_probe(x[train], y[train])
    predicted = probe.predict(x[test])
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(y[train]) for _ in range(N_SHUFFLES)], axis=1)
    directions, intercepts, _, _ = _ridge(x[train], shuffled)
    controls = np.asarray(x[test], dtype=np.float64) @ directions.T + intercepts  # [test, shuffles]
    control_r = np.array([pearson(y[test], c) for c in controls.T])
    control_r = control_r[np.isfinite(control_r)]  # constant predictions (features that never vary) have none
    return {
        "probe": probe,
        "predicted": predicted,
        "pearson": pearson_ci(y[test], predicted, seed=seed).as_dict(),
        "mae": float(np.abs(predicted - y[test]).mean()),
        "shuffled_pearson": float(control_r.mean()) if len(control_r) else float("nan"),
        "shuffled_pearson_range": (
            [float(v) for v in np.quantile(control_r, [0.025, 0.975])] if len(control_r) else [np.nan] * 2
        ),
        "shuffled_mae": float(np.abs(controls - y[test][:, None]).mean()),
        "train_loo_mse": probe.train_mse,
        "alpha": probe.alpha,
    }


def cross_fitted(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int = 5) -> np.ndarray:
    """Out-of-fold predictions for every row (folds by group), so each row is predicted by a probe that
    never saw its group: the probe's reward estimate for a set of completions without leakage."""
    n_folds = min(n_folds, len(np.unique(groups)))
    if n_folds < 2:
        raise IrmscopeError("cross-fitting needs at least 2 groups (prompts); add more completions")
    out = np.empty(len(y))
    for fit_rows, predict_rows in GroupKFold(n_splits=n_folds).split(x, y, groups):
        out[predict_rows] = fit_probe(x[fit_rows], y[fit_rows]).predict(x[predict_rows])
    return out
