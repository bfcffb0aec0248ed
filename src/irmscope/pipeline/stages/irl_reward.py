"""Stage ``irl-reward``: the inverse-RL reward exported as a reward irmscope can tune with.

The leaderboard scores inverse RL cross-fitted; this stage fits it once more on every evaluation prompt, at
the block most of the leaderboard's folds chose for the tuned model, and saves it as a
:class:`~irmscope.rewards.ReadoutReward` (``irmscope tune --reward readout:DIR``) over the tuned model's
residual stream, closing the loop as the inverse-RL paper does, and beside it its control: the same read-out
with its weights shuffled across the features (``reward-shuffled/``). As a check that the saved reward
computes the fitted function, it rescores the evaluation texts from scratch (a fresh forward pass, the texts
tokenised whole) and correlates that with the fit's values on the stored read-outs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from irmscope.artifacts import RESULT_FILES, coverage_residuals_file
from irmscope.leaderboard.methods.irl import irl_reward
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.pipeline.stages.probes import coverage
from irmscope.probes.residuals import load_residuals

#: the folders of the stage's work directory that hold the exported reward and its shuffled control
REWARD_DIR, SHUFFLED_DIR = "reward", "reward-shuffled"
METHOD = "inverse RL, max-entropy"


@register
class IrlReward(Stage):
    name = "irl-reward"
    needs = ("leaderboard", "probes", "evaluate")
    result_key = "irl_reward"
    requires = ("tuned", "probes")

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        return {"seed": ctx.seed, "method": METHOD}

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        board = ctx.read_json("leaderboard", RESULT_FILES["leaderboard"])
        layer = next(row for row in board["rows"] if row["method"] == METHOD)["details"]["layer"]["tuned"]
        cov = coverage(ctx)
        residuals = load_residuals(ctx.finished["probes"].dir / coverage_residuals_file("tuned"))
        spec = ctx.tuned_spec
        model_spec = str(Path(spec).resolve()) if Path(spec).exists() else spec
        reward = irl_reward(cov, residuals, layer, model_spec, lm=ctx.tuned)
        fitted = reward.of_features(residuals.at("mean_pooled", layer))
        rescored = reward.score(cov.texts)
        reward.save(work / REWARD_DIR)
        reward.shuffled(ctx.seed).save(work / SHUFFLED_DIR)
        return {  # paths stay out: results.json must not change with the run's folder
            "method": METHOD,
            "layer": layer,
            "folder": REWARD_DIR,
            "shuffled_folder": SHUFFLED_DIR,
            "rescoring_pearson": float(np.corrcoef(fitted, rescored)[0, 1]),
        }
