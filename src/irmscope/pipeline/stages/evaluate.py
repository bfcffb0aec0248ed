"""Stage ``evaluate``: sample completions of the evaluation prompts and score them (the paper's Table 7).

With a tuned model, both models complete every prompt (paired gain, KL, fluency controls); without one,
only the base model does. Its ``samples.json`` is what later stages read instead of sampling again, and
its ``likelihoods.npz`` (both models' likelihoods of those samples) what the leaderboard reads instead of
scoring them again.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from irmscope.artifacts import CoverageLikelihoods, Samples
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.report.headline import gain_warning
from irmscope.stages import StageResult
from irmscope.stats import bootstrap_ci
from irmscope.tune import evaluate_policy


def model_upstream(ctx: RunContext) -> list[StageResult]:
    """What the stages about the studied models read: the prompts, and the tune stage when there is one
    (else the planted lexicon, if any, which the tune stage would otherwise carry)."""
    if "tune" in ctx.finished:
        return [ctx.finished["prompts"], ctx.finished["tune"]]
    return [ctx.finished[name] for name in ("prompts", "planted-lexicon") if name in ctx.finished]


@register
class Evaluate(Stage):
    name = "evaluate"
    version = 2  # 2: keeps both models' likelihoods of the samples for the leaderboard
    needs = ("prompts", "tune")
    result_key = "evaluation"

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        config = ctx.config
        settings = {
            "generation": config.generation.model_dump(),
            "reward": config.reward.spec,
            "seed": ctx.seed,
        }
        if ctx.tuned_spec:
            settings["tuned"] = config.model.tuned
        return settings

    def announce(self, ctx: RunContext) -> list[str]:
        warning = gain_warning(ctx.stage_outputs(self.name), ctx.reward.name)
        return [warning] if warning else []

    def upstream(self, ctx: RunContext, model: str | None) -> list[StageResult]:
        return model_upstream(ctx)

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        prompts = ctx.evaluation_prompts
        if not ctx.tuned_spec:
            completions = ctx.sampling.complete(ctx.base, prompts)
            scores = ctx.reward.score_completions(prompts, completions)
            Samples(prompts=prompts, base_completions=completions, base_scores=scores.tolist()).save(work)
            return {
                "base_mean_reward": bootstrap_ci(scores, seed=ctx.seed).as_dict(),
                "n_prompts": len(prompts),
            }
        result = evaluate_policy(ctx.base, ctx.tuned, prompts, ctx.reward, ctx.sampling)
        Samples(**result.pop("samples")).save(work)
        likelihoods = result.pop("likelihoods")
        CoverageLikelihoods({label: asdict(values) for label, values in likelihoods.items()}).save(work)
        return result
