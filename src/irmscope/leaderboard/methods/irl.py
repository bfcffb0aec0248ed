"""Inverse RL (max-entropy and max-margin) as reward estimates: a linear reward over the residual stream
under which the tuned model's completions are the expert's (see :mod:`irmscope.irl`).

The features are the mean over each text's tokens (prompt and completion, the first token left out) of
the residual stream leaving one block (the
probes stage's read-outs of the coverage texts); the block is the one whose read-out best predicts who
wrote a completion (cross-validated log-likelihood, the max-entropy objective), a choice that uses
authorship only, never the known reward. Estimates are cross-fitted by prompt. The base-model row fits the
same IRL on the base model's read-out of the same completions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from irmscope.irl import PENALTIES, IrlKind, cross_fitted_irl, identifiability, penalty_search
from irmscope.leaderboard.base import Coverage, Estimates, MethodInputs, RewardEstimator, register
from irmscope.leaderboard.metrics import preference_accuracy
from irmscope.probes.residuals import Residuals, load_residuals


def best_layer(residuals: Residuals, expert: np.ndarray, groups: np.ndarray) -> int:
    """The block whose mean-pooled read-out gives the highest cross-validated likelihood of authorship."""
    scores = []
    for index in range(len(residuals.layers)):
        x = residuals.mean[:, index].astype(np.float64)
        x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
        scores.append(penalty_search("max-entropy", groups, PENALTIES[::2]).fit(x, expert).best_score_)
    return residuals.layers[int(np.argmax(scores))]


class InverseRL(RewardEstimator):
    needs = ("probes",)

    def __init__(self, kind: IrlKind, description: str, with_identifiability: bool) -> None:
        self.kind, self.description, self.with_identifiability = kind, description, with_identifiability
        self.name = f"inverse RL, {kind}"

    def _readouts(self, inputs: MethodInputs, label: str) -> Residuals:
        return load_residuals(inputs.stage("probes") / f"coverage_residuals-{label}.npz")

    def estimate(self, inputs: MethodInputs) -> Estimates:
        cov = inputs.coverage
        expert, groups = np.asarray(cov.policy) == "tuned", cov.prompt_index
        out: dict[str, np.ndarray] = {}
        details: dict[str, Any] = {"features": "mean-pooled residual stream", "layer": {}}
        for label in ("tuned", "base"):
            residuals = self._readouts(inputs, label)
            layer = best_layer(residuals, expert, groups)
            details["layer"][label] = layer
            out[label], _ = cross_fitted_irl(
                residuals.at("mean_pooled", layer), expert, groups, self.kind, seed=inputs.seed
            )
            if self.with_identifiability and label == "tuned":
                details["identifiability"] = self._identifiability(residuals, layer, expert, cov)
        return Estimates(tuned=out["tuned"], base=out["base"], details=details)

    def _identifiability(
        self, residuals: Residuals, layer: int, expert: np.ndarray, cov: Coverage
    ) -> dict[str, Any]:
        layers = residuals.layers
        other = layers[len(layers) // 2] if layers[len(layers) // 2] != layer else layers[len(layers) // 3]
        feature_sets = {
            f"mean-pooled L{layer}": residuals.at("mean_pooled", layer),
            f"mean-pooled L{other}": residuals.at("mean_pooled", other),
            f"last token L{layers[-1]}": residuals.at("last_token", layers[-1]),
        }
        result = identifiability(feature_sets, expert, cov.prompt_index, self.kind)
        estimates = result.pop("estimates")
        result["preference_accuracy"] = {
            run: preference_accuracy(cov.true, values, cov.prompt_index) for run, values in estimates.items()
        }
        return result


register(
    InverseRL(
        "max-entropy",
        "logistic regression of 'the tuned model wrote it' on the mean-pooled residual stream: the "
        "max-entropy IRL reward with the base policy as reference (no known-reward labels; cross-fitted)",
        with_identifiability=True,
    )
)
register(
    InverseRL(
        "max-margin",
        "linear SVM separating the tuned model's completions from the base model's on the same features "
        "(no known-reward labels; cross-fitted)",
        with_identifiability=False,
    )
)
