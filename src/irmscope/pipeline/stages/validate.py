"""Stage ``validate``: ablate the related features and measure the reward lost (Table 5), and count how
often they fire with the elicited reward (Table 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.activations import ActivationStore
from irmscope.artifacts import Regression
from irmscope.data import truncate_to_prefixes
from irmscope.errors import IrmscopeError
from irmscope.interpret import token_values
from irmscope.io import write_json
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.sae import SAE
from irmscope.stats import bootstrap_ci
from irmscope.validate import (
    AblationRun,
    AttributedSelection,
    ablation_table,
    activation_frequency_table,
    attribute_reward_to_features,
    select_by_attribution,
)


@register
class Validate(Stage):
    name = "validate"
    needs = ("interpret", "evaluate", "elicit")
    result_key = "validation"
    requires = ("tuned",)
    config_sections = ("validation", "data", "generation")

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        settings, samples = ctx.config.validation, ctx.samples
        n = min(settings.n_ablation_prompts, len(samples.prompts))
        related = ctx.finished["interpret"].summary["related"]
        tuned_saes = ctx.saes("tuned")
        attributed = None
        if settings.n_attributed_features and ctx.lexicon is not None:
            attributed = attributed_selection(ctx, tuned_saes)
        result: dict[str, Any] = {
            "table5": ablation_table(
                AblationRun(ctx.tuned, tuned_saes, samples.prompts[:n], ctx.reward, ctx.sampling),
                related,
                before=samples.scores("tuned")[:n],
                attributed=attributed,
                base=samples.scores("base")[:n],
                n_random_draws=settings.n_random_draws,
                base_model=ctx.base if settings.base_model_check and attributed is not None else None,
            ),
            "base_mean_reward": bootstrap_ci(samples.scores("base")[:n], seed=ctx.seed).as_dict(),
        }
        if "elicit" in ctx.finished:
            result.update(table6(ctx, tuned_saes, related))
        write_json(work / self.result_file, result)
        return {"n_ablated": sum(len(f) for f in related.values())}


def table6(ctx: RunContext, saes: dict[str, SAE], related: dict[str, list[int]]) -> dict[str, Any]:
    """Table 6 for the faithful and ridge-delta R on the reviews the activations stage set aside for it
    (``table6``: never an SAE text, a feature-picking text or a prompt), or why it was skipped."""
    folder = ctx.finished["activations-tuned"].dir / "table6"
    if not folder.exists():
        return {"table6_skipped": "no review was left for Table 6 after the SAE texts and prompts"}
    fitted, store = Regression.load(ctx.finished["elicit"].dir, "tuned"), ActivationStore(folder)
    threshold = ctx.config.validation.threshold
    return {
        "table6": {
            variant: activation_frequency_table(
                saes, store, fitted.coef[variant], fitted.intercept[variant], related, threshold
            )
            for variant in ("faithful", "ridge-delta")
        }
    }


def attribution_prompts(ctx: RunContext, n: int) -> list[str]:
    """``n`` review prefixes of the evaluation split that are not evaluation prompts, in the prompts
    stage's order and cut the same way (so an evaluation prompt is recognised by its text)."""
    held, texts = set(ctx.evaluation_prompts), list(ctx.reviews("prompts")["text"])
    cut = {"tokenizer": ctx.tuned.tokenizer, "n_tokens": ctx.config.data.prefix_tokens}
    limit = len(held) + n  # the evaluation's prefixes and n more, unless a review repeats an evaluation one
    while True:
        prefixes = truncate_to_prefixes(texts, **cut, limit=limit)
        prompts = [p for p in prefixes if p not in held]
        if len(prompts) >= n or len(prefixes) < limit:  # enough, or every review was cut
            break
        limit *= 2
    if not prompts:
        raise IrmscopeError(
            f"{ctx.config.data.source} has no review left once the evaluation prompts are set aside; use a "
            "larger source or set validation.n_attributed_features=0"
        )
    return prompts[:n]


def attributed_selection(ctx: RunContext, saes: dict[str, SAE]) -> AttributedSelection:
    """Table 5's attributed selection, summed over the tuned model's completions to review prefixes that
    are not evaluation prompts, so the selection never sees the completions the ablation is measured on."""
    settings = ctx.config.validation
    prompts = attribution_prompts(ctx, settings.n_attribution_prompts)
    completions = ctx.sampling.complete(ctx.tuned, prompts, desc="completions to attribute")
    scores = attribute_reward_to_features(
        ctx.tuned, saes, prompts, completions, token_values(ctx.tuned.tokenizer, ctx.lexicon),
        progress=ctx.progress,
    )  # fmt: skip
    return select_by_attribution(scores, settings.n_attributed_features)
