"""Stage ``irl-reward``: the inverse-RL reward exported as a reward irmscope can tune with.

The leaderboard scores inverse RL cross-fitted; this stage fits it once more on every evaluation prompt, at
the block most of the leaderboard's folds chose for the tuned model, and saves it as a
:class:`~irmscope.rewards.ReadoutReward` (``irmscope tune --reward readout:DIR``) over the tuned model's
residual stream, closing the loop as the inverse-RL paper does, and beside it its control: the same read-out
with its weights shuffled across the features (``reward-shuffled/``). As a check that the saved reward
computes the fitted function, it rescores the evaluation completions from scratch (a fresh forward pass)
and compares, within each prompt, with the fit's values on the stored read-outs; a deviation beyond
float noise stops the stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from irmscope.artifacts import RESULT_FILES, coverage_residuals_file
from irmscope.errors import IrmscopeError
from irmscope.leaderboard.methods.irl import irl_reward
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.pipeline.stages.probes import coverage
from irmscope.probes.residuals import load_residuals

#: the folders of the stage's work directory that hold the exported reward and its shuffled control
REWARD_DIR, SHUFFLED_DIR = "reward", "reward-shuffled"
METHOD = "inverse RL, max-entropy"
#: the largest within-prompt difference between the saved reward, rescored from scratch, and the fit, as a
#: share of the fit's spread: float noise is ~1e-6; a different read-out would be far above
RESCORING_TOLERANCE = 1e-3


@register
class IrlReward(Stage):
    name = "irl-reward"
    needs = ("leaderboard", "evaluate", "read-samples")
    result_key = "irl_reward"
    requires = ("tuned", "probes")

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        return {"seed": ctx.seed, "method": METHOD}

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        board = ctx.read_json("leaderboard", RESULT_FILES["leaderboard"])
        layer = next(row for row in board["rows"] if row["method"] == METHOD)["details"]["layer"]["tuned"]
        cov = coverage(ctx)
        residuals = load_residuals(ctx.finished["read-samples"].dir / coverage_residuals_file("tuned"))
        spec = ctx.tuned_spec
        model_spec = str(Path(spec).resolve()) if Path(spec).exists() else spec
        reward = irl_reward(cov, residuals, layer, model_spec, lm=ctx.tuned)
        fitted = reward.of_features(residuals.at("mean_pooled", layer))
        rescored = reward.score_completions(cov.prompts, cov.completions)
        # the reward is identified within prompts only: compare what it says within each prompt
        n = len(fitted) // 2
        within = (rescored[n:] - rescored[:n], fitted[n:] - fitted[:n])  # tuned − base completion
        deviation = float(np.abs(within[0] - within[1]).max() / max(float(np.std(within[1])), 1e-12))
        if deviation > RESCORING_TOLERANCE:
            raise IrmscopeError(
                f"the exported IRL reward does not reproduce its fit (largest within-prompt deviation "
                f"{deviation:.2g} of the fit's spread); the read-out or the model changed under it"
            )
        reward.save(work / REWARD_DIR)
        reward.shuffled(ctx.seed).save(work / SHUFFLED_DIR)
        return {  # paths stay out: results.json must not change with the run's folder
            "method": METHOD,
            "layer": layer,
            "folder": REWARD_DIR,
            "shuffled_folder": SHUFFLED_DIR,
            "rescoring_deviation": deviation,
        }
