"""Stage ``attribute``: which tokens and layers carry each model's read-out of the reward (attribution
patching), on the evaluation completions and on short contrastive pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.artifacts import coverage_residuals_file
from irmscope.data.triples import short_contrastive_triples
from irmscope.io import write_json
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.pipeline.stages.probes import coverage
from irmscope.probes.attribution import reward_attribution
from irmscope.probes.residuals import load_residuals


@register
class Attribute(Stage):
    name = "attribute"
    needs = ("evaluate", "read-samples")
    result_key = "attribution"
    requires = ("tuned", "probes")

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        probes = ctx.config.probes
        return {
            "n_patch_pairs": probes.n_patch_pairs,
            "test_fraction": probes.test_fraction,
            "reward": ctx.config.reward.model_dump(),
            "data": ctx.config.data.source,
            "seed": ctx.seed,
        }

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        probes, lexicon = ctx.config.probes, ctx.lexicon
        triples = []
        if lexicon is not None and probes.n_patch_pairs:
            texts = list(ctx.reviews("contexts")["text"])
            triples = short_contrastive_triples(
                texts, lexicon, ctx.base.tokenizer, probes.n_patch_pairs, ctx.seed
            )
        rows = coverage(ctx)
        read = ctx.finished["read-samples"].dir
        result = reward_attribution(
            {"tuned": ctx.tuned, "base": ctx.base},
            rows.prompts,
            rows.completions,
            reward=rows.true,
            groups=rows.prompt_index,
            readouts={
                label: load_residuals(read / coverage_residuals_file(label)) for label in ("tuned", "base")
            },
            triples=triples,
            test_fraction=probes.test_fraction,
            seed=ctx.seed,
            progress=ctx.progress,
        )
        write_json(work / self.result_file, result)
        return {label: result[label]["total"] for label in ("tuned", "base")}
