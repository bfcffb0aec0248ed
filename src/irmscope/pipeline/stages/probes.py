"""Stage ``probes``: linear read-outs of the known reward and of star ratings from each model's residual
stream, with the layer chosen by folds of whole prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.artifacts import coverage_residuals_file
from irmscope.data.samples import Coverage
from irmscope.io import write_json
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register, section_values
from irmscope.probes.experiment import reward_probe_study
from irmscope.probes.residuals import load_residuals


def coverage(ctx: RunContext) -> Coverage:
    """The evaluation samples as the (prompt, completion, true reward) rows the read-outs are scored on."""
    return Coverage.from_samples(ctx.samples)


@register
class Probes(Stage):
    name = "probes"
    version = 2  # 2: the coverage read-outs come from the read-samples stage, which keeps them
    needs = ("evaluate", "read-samples")
    result_key = "probes"
    requires = ("tuned", "probes")

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        probes = ctx.config.probes
        return {
            "probes": section_values(
                probes,
                include={"n_rating_texts", "max_length", "test_fraction", "max_positions", "precision"},
            ),
            "data": ctx.config.data.source,
            "seed": ctx.seed,
        }

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        result = reward_probe_study(
            {"tuned": ctx.tuned, "base": ctx.base},
            coverage(ctx),
            ctx.reviews("probes"),
            ctx.config.probes,
            work,
            seed=ctx.seed,
            progress=ctx.progress,
            coverage_residuals={
                label: load_residuals(ctx.finished["read-samples"].dir / coverage_residuals_file(label))
                for label in ("tuned", "base")
            },
        )
        write_json(work / self.result_file, result)
        return {
            f"{target}_{label}": result[target][label]["best"]["pearson"]["value"]
            for target in ("reward", "ratings")
            if result.get(target)
            for label in ("tuned", "base")
        }
