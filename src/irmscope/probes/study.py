"""The probe study ("Do RL'd models estimate anticipated rewards?"): how well a linear read-out of the
residual stream predicts a reward, at which layer and which position, for the base and the tuned model.

For one model and one target (a reward of completions, or human ratings of reviews) it fits a ridge probe
at every layer at the last token, at the prompt's end and on the mean over the text's tokens, picks the
best (layer, position) by cross-validated error (folds of whole prompts) on the *training* texts only,
and reports every probe on held-out texts beside its shuffled-label control. The leaderboard's estimate
is cross-fitted, the choice made again inside each fold. At the layer best read from one (the last)
token it then fits one probe on every continuation token and reports the held-out error against the
token's position (the study's Figs. 5-6: how early the reward can be read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel
from irmscope.models.precision import Precision
from irmscope.probes.residuals import Residuals, read_positions, read_residuals
from irmscope.probes.ridge import (
    LinearProbe,
    cross_fitted,
    fit_probe,
    group_split,
    held_out_score,
    in_threads,
    pearson,
)

#: positions held by fewer held-out texts are left out of the error-against-position curve
MIN_TEXTS_PER_POSITION = 5


@dataclass(frozen=True)
class ProbeStudy:
    """``summary`` is JSON-able; ``probe`` is the chosen probe refitted on every text (for steering and for
    reading other texts), ``cross_fitted`` out-of-fold predictions for every text (layer and position
    chosen again inside each fold; ``None`` when not asked for), and ``residuals``
    the texts' read-outs at every layer (so other probes can be applied to them without another pass)."""

    summary: dict[str, Any]
    probe: LinearProbe
    cross_fitted: np.ndarray | None
    residuals: Residuals


def _row(layer: int, score: dict[str, Any]) -> dict[str, Any]:
    return {"layer": layer, **{k: v for k, v in score.items() if k not in ("probe", "predicted")}}


def position_curve(
    per_text: list[np.ndarray],
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    max_positions: int,
    groups: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One probe fitted on every continuation token of the training texts (its penalty by folds of whole
    ``groups`` of texts, default each text alone); held-out absolute error and r at each position (tokens
    past ``max_positions`` are left out)."""
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)

    def stack(mask: np.ndarray):
        rows = [(x[:max_positions], i) for i, x in enumerate(per_text) if mask[i] and len(x)]
        if not rows:
            raise IrmscopeError("no continuation tokens to probe by position; are the continuations empty?")
        xs = np.concatenate([x for x, _ in rows])
        owner = np.concatenate([np.full(len(x), i) for x, i in rows])
        position = np.concatenate([np.arange(len(x)) for x, _ in rows])
        return xs, owner, position

    x_train, owner_train, _ = stack(train)
    probe = fit_probe(x_train, y[owner_train], groups=groups[owner_train])  # a text's tokens share its target
    x_test, owner_test, position = stack(test)
    predicted, truth = probe.predict(x_test), y[owner_test]
    curve = []
    for p in range(int(position.max()) + 1):
        at = position == p
        if at.sum() < MIN_TEXTS_PER_POSITION:  # the few longest texts' tails: too few to summarise
            continue
        errors = np.abs(predicted[at] - truth[at])
        curve.append(
            {
                "position": p,
                "n": int(at.sum()),
                "mae": float(errors.mean()),
                "mae_sem": float(errors.std(ddof=1) / np.sqrt(at.sum())) if at.sum() > 1 else 0.0,
                "pearson": pearson(truth[at], predicted[at]),
            }
        )
    return curve


def _layer_scores(
    kinds: dict[str, np.ndarray],
    layers: Sequence[int],
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    groups: np.ndarray,
    seed: int,
) -> tuple[dict[str, list[dict[str, Any]]], tuple[float, str, int, dict[str, Any]], int]:
    """Every (position kind, layer) probe scored on the held-out texts; the best by cross-validated error
    on the training texts alone (``(error, kind, layer index, score)``), so the held-out scores stay
    honest; and the layer index best read from the last token, where the position curve is measured."""
    per_layer: dict[str, list[dict[str, Any]]] = {}
    best: tuple[float, str, int, dict[str, Any]] | None = None
    single: tuple[float, int] | None = None
    probes = [(kind, index) for kind in kinds for index in range(len(layers))]
    scores = in_threads(
        lambda probe: held_out_score(kinds[probe[0]][:, probe[1]], y, train, test, groups, seed=seed), probes
    )
    for (kind, index), score in zip(probes, scores, strict=True):
        per_layer.setdefault(kind, []).append(_row(layers[index], score))
        if best is None or score["train_cv_mse"] < best[0]:
            best = (score["train_cv_mse"], kind, index, score)
        if kind == "last_token" and (single is None or score["train_cv_mse"] < single[0]):
            single = (score["train_cv_mse"], index)
    assert best is not None and single is not None
    return per_layer, best, single[1]


def probe_study(
    lm: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    targets: Sequence[float],
    groups: Sequence[int] | None = None,
    test_fraction: float = 0.3,
    max_length: int | None = 128,
    max_positions: int = 64,
    by_position: bool = True,
    cross_fit: bool = True,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    residuals: Residuals | None = None,
    precision: Precision = "float32",
) -> ProbeStudy:
    """Probe ``targets`` from ``lm``'s residual stream (see the module docstring).

    ``groups`` ties texts that must stay on one side of the split (the completions of one prompt); by
    default every text is its own group; they also choose each penalty (folds of whole groups) and make the
    intervals resample groups. ``by_position=False`` skips the error-against-position curve (a second pass
    over the texts); ``cross_fit=False`` skips the out-of-fold predictions (a selection inside each fold).
    ``residuals``: the texts' read-outs at every layer, read already (e.g. by the pipeline's read-samples
    stage, in the same pass as other methods' statistics); else they are read here. ``precision``: of the
    passes read here (:mod:`irmscope.models.precision`).
    """
    y = np.asarray(targets, dtype=np.float64)
    if len(y) != len(continuations):
        raise IrmscopeError(f"{len(y)} targets for {len(continuations)} texts; give one target per text")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    train, test = group_split(groups, test_fraction, seed)
    if residuals is None:
        residuals = read_residuals(
            lm,
            prompts,
            continuations,
            max_length=max_length,
            batch_size=batch_size,
            progress=progress,
            precision=precision,
        )
    elif len(residuals.last) != len(y):
        raise IrmscopeError(f"{len(residuals.last)} read-outs for {len(y)} texts; read the same texts")
    kinds = residuals.by_position()
    per_layer, (_, kind, index, score), single = _layer_scores(
        kinds, residuals.layers, y, train, test, groups, seed
    )
    layer, position_layer = residuals.layers[index], residuals.layers[single]
    chosen = kinds[kind][:, index]
    curve = None
    if by_position:
        read = {"batch_size": batch_size, "progress": progress, "precision": precision}
        at = {"layer": position_layer, "max_length": max_length, "max_positions": max_positions}
        per_text = read_positions(lm, prompts, continuations, **at, **read)
        curve = position_curve(per_text, y, train, test, max_positions, groups)
    summary = {
        "n_texts": len(y),
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "target_std": float(y.std()),
        "per_layer": per_layer,
        "best": {"position": kind, **_row(layer, score)},
        "by_position": {"layer": position_layer, "curve": curve} if curve is not None else None,
    }
    out_of_fold = None
    if cross_fit:
        candidates = {
            f"{kind}@{layer}": acts[:, i]
            for kind, acts in kinds.items()
            for i, layer in enumerate(residuals.layers)
        }
        out_of_fold, fold_choices = cross_fitted(candidates, y, groups)
        summary["cross_fitted_choices"] = fold_choices
    return ProbeStudy(summary, fit_probe(chosen, y, groups), out_of_fold, residuals)
