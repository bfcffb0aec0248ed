"""Stage ``evaluate``: sample completions of the evaluation prompts and score them (the paper's Table 7).

With a tuned model, both models complete every prompt (paired gain, distinct bigrams); without one, only the
base model does. Its ``samples.json`` is what later stages read instead of sampling again. The half of
Table 7 that reads the samples with both models (KL, the base model's perplexities) comes from the
read-samples stage's one pass over them, and joins this stage's section of ``results.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.artifacts import LIKELIHOOD_EVALUATION, Samples
from irmscope.models.precision import resolve_precision
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register, section_values
from irmscope.stages import StageResult
from irmscope.stats import bootstrap_ci
from irmscope.tune.evaluate import sampled_evaluation


def model_upstream(ctx: RunContext) -> list[StageResult]:
    """What the stages about the studied models read: the prompts, and the tune stage when there is one
    (else the planted lexicon, if any, which the tune stage would otherwise carry)."""
    if "tune" in ctx.finished:
        return [ctx.finished["prompts"], ctx.finished["tune"]]
    return [ctx.finished[name] for name in ("prompts", "planted-lexicon") if name in ctx.finished]


@register
class Evaluate(Stage):
    name = "evaluate"
    # 2: keeps both models' likelihoods of the samples for the leaderboard; 3: the likelihoods, KL and
    # perplexities moved to the read-samples stage's pass
    version = 3
    needs = ("prompts", "tune")
    result_key = "evaluation"

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        config = ctx.config
        settings = {
            "generation": section_values(config.generation),
            "reward": config.reward.spec,
            "seed": ctx.seed,
        }
        if ctx.tuned_spec:
            settings["tuned"] = config.model.tuned
        return settings

    def upstream(self, ctx: RunContext, model: str | None) -> list[StageResult]:
        return model_upstream(ctx)

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        prompts = ctx.evaluation_prompts
        # what the report says the completions were sampled in (auto resolves by machine)
        device = next(ctx.base.model.parameters()).device
        sampled_in = {"sampling_precision": resolve_precision(ctx.config.generation.precision, device)}
        if not ctx.tuned_spec:
            completions = ctx.sampling.complete(ctx.base, prompts)
            scores = ctx.reward.score_completions(prompts, completions)
            Samples(prompts=prompts, base_completions=completions, base_scores=scores.tolist()).save(work)
            return {
                "base_mean_reward": bootstrap_ci(scores, seed=ctx.seed).as_dict(),
                "n_prompts": len(prompts),
                **sampled_in,
            }
        result = sampled_evaluation(ctx.base, ctx.tuned, prompts, ctx.reward, ctx.sampling)
        Samples(**result.pop("samples")).save(work)
        return result | sampled_in

    def result(self, ctx: RunContext) -> dict[str, Any]:
        """The evaluation section: this stage's summary joined by the read-samples stage's statistics."""
        section = super().result(ctx)
        if section[self.result_key] is not None and "read-samples" in ctx.finished:
            section[self.result_key] |= ctx.read_json("read-samples", LIKELIHOOD_EVALUATION)
        return section
