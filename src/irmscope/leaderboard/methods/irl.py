"""Inverse RL (max-entropy and max-margin) as reward estimates: a linear reward over the residual stream
under which the tuned model's completions are the expert's (see :mod:`irmscope.irl`).

The features are the mean over each text's tokens (prompt and completion, the first token left out) of
the residual stream leaving one block (the
read-samples stage's read-outs of the coverage texts). Estimates are cross-fitted by prompt, and inside each
fold the block and the penalty are chosen by a second, inner cross-validation over that fold's fitting
prompts only (the method's own objective: authorship, never the known reward), so neither choice sees
the prompts it predicts. The base-model row fits the same IRL on the base model's read-out of the same
completions.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from irmscope.artifacts import coverage_residuals_file
from irmscope.irl import IrlKind, cross_fitted_irl, fit_irl, identifiability
from irmscope.leaderboard.base import Coverage, Estimates, MethodInputs, RewardEstimator, register
from irmscope.leaderboard.metrics import preference_accuracy
from irmscope.models.loading import LoadedModel
from irmscope.probes.residuals import Residuals, load_residuals
from irmscope.rewards import ReadoutReward


class InverseRL(RewardEstimator):
    needs = ("read-samples",)
    identified = ("preference_accuracy", "epic")  # a reward up to a constant per prompt

    def __init__(self, kind: IrlKind, description: str, with_identifiability: bool) -> None:
        self.kind, self.description, self.with_identifiability = kind, description, with_identifiability
        self.name = f"inverse RL, {kind}"

    def _readouts(self, inputs: MethodInputs, label: str) -> Residuals:
        return load_residuals(inputs.stage("read-samples") / coverage_residuals_file(label))

    def estimate(self, inputs: MethodInputs) -> Estimates:
        cov = inputs.coverage
        expert, groups = np.asarray(cov.policy) == "tuned", cov.prompt_index
        out: dict[str, np.ndarray] = {}
        details: dict[str, Any] = {
            "features": "mean-pooled residual stream",
            "fit": "conditional logit within prompts" if self.kind == "max-entropy" else "ranking SVM",
            "layer": {},
            "layers_by_fold": {},
        }
        for label in ("tuned", "base"):
            residuals = self._readouts(inputs, label)
            candidates = {layer: residuals.at("mean_pooled", layer) for layer in residuals.layers}
            out[label], _, chosen = cross_fitted_irl(
                candidates, expert, groups, kind=self.kind, seed=inputs.seed
            )
            layer = Counter(chosen).most_common(1)[0][0]  # the block most folds chose (identifiability's)
            details["layer"][label], details["layers_by_fold"][label] = layer, chosen
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
        "conditional logit of 'the tuned model wrote it' on within-prompt differences of the mean-pooled "
        "residual stream: the max-entropy IRL reward with the base policy as reference (no known-reward "
        "labels; cross-fitted, block and penalty chosen inside each fold)",
        with_identifiability=True,
    )
)
register(
    InverseRL(
        "max-margin",
        "linear SVM without intercept separating the tuned model's completion from the base model's within "
        "each prompt, on the same features (no known-reward labels; cross-fitted, block and penalty chosen "
        "inside each fold)",
        with_identifiability=False,
    )
)


def irl_reward(
    coverage: Coverage,
    residuals: Residuals,
    layer: int,
    model: str,
    kind: IrlKind = "max-entropy",
    lm: LoadedModel | None = None,
) -> ReadoutReward:
    """The inverse-RL reward as a :class:`~irmscope.rewards.ReadoutReward` one can tune with: ``kind``'s
    fit on every prompt of ``coverage`` (the leaderboard cross-fits to score the method; a reward for use
    is fitted on all the demonstrations), on ``residuals``' mean-pooled read-out after block ``layer`` of
    ``model`` (the model whose read-out ``residuals`` are), its penalty chosen by cross-validation over
    prompts. It never sees the known reward: only which model wrote each completion. ``lm`` is ``model``
    already loaded, if it is."""
    expert = np.asarray(coverage.policy) == "tuned"
    fit = fit_irl(residuals.at("mean_pooled", layer), expert, coverage.prompt_index, kind)
    return ReadoutReward(
        model,
        layer,
        fit.weights,
        fit.mean,
        fit.scale,
        name=f"irl-{kind}",
        description=(
            f"The inverse-RL ({kind}) reward recovered from {model}'s completions against its base "
            f"model's: a linear read-out of the mean-pooled residual stream after block {layer}"
        ),
        lm=lm,
    )
