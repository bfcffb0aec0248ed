"""Stage ``steer``: add the probe and feature directions to the tuned and base models' residual streams and
measure the reward of what they then write, beside random directions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.io import write_json
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register, section_values
from irmscope.probes import steering_curves
from irmscope.probes.experiment import steering_directions


@register
class Steer(Stage):
    name = "steer"
    needs = ("probes", "interpret", "saes")
    result_key = "steering"
    requires = ("tuned", "probes")
    reads = ("probes", "interpret", "saes-tuned")

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        return {
            "probes": ctx.config.probes.model_dump(
                include={"n_steer_prompts", "steer_scales", "n_random_directions"}
            ),
            "generation": section_values(ctx.config.generation),
            "seed": ctx.seed,
        }

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        probes = ctx.config.probes
        directions = steering_directions(
            ctx.finished["probes"].dir, ctx.read_json("interpret", "interpretation.json"), ctx.saes("tuned")
        )
        result = steering_curves(
            ctx.tuned,
            ctx.base,
            directions=directions,
            prompts=ctx.samples.prompts[: probes.n_steer_prompts],
            reward=ctx.reward,
            scales=probes.steer_scales,
            n_random=probes.n_random_directions,
            sampling=ctx.sampling,
        )
        write_json(work / self.result_file, result)
        return {"directions": list(directions)}
