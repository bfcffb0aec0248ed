"""Stage ``tune``: fine-tune the base model against the known reward (TRL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from irmscope.config import TuneSection
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.pipeline.stages.prompts import review_prefixes
from irmscope.tune import tune_model
from irmscope.tune.trainer import resolved_settings

#: tune settings added after runs were made, with the default that leaves tuning as it was: at that default
#: they stay out of the stage's key, so a run made before them keeps its tuned model
ADDED_SETTINGS: dict[str, Any] = {"scale_rewards": None, "precision": "float32"}


def tune_fingerprint(settings: TuneSection) -> dict[str, Any]:
    """The tune settings that enter the stage's key (see :data:`ADDED_SETTINGS`), ``precision`` resolved
    for this machine (``auto`` tunes in float32 where bfloat16 is not native, as before the setting)."""
    dump = resolved_settings(settings).model_dump()
    return {k: v for k, v in dump.items() if k not in ADDED_SETTINGS or v != ADDED_SETTINGS[k]}


@register
class Tune(Stage):
    name = "tune"
    needs = ("prompts", "planted-lexicon")

    def applies(self, ctx: RunContext) -> bool:
        return ctx.tunes_a_model

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        config = ctx.config
        return {
            "tune": tune_fingerprint(config.tune),
            "reward": config.reward.spec,
            "model": config.model.name,
            "seed": ctx.seed,
        }

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        tuned = tune_model(
            ctx.config.model.name,
            ctx.reward,
            ctx.prompts.train,
            work,
            settings=ctx.config.tune,
            seed=ctx.seed,
            reward_spec=ctx.reward_spec,
            progress=ctx.progress,
            check_prompts=check_prompts(ctx),
        )
        # resumed_from: a resumed run's time says nothing of the machine's pace (progress.PRIOR_SHARES)
        return {
            key: tuned.manifest[key] for key in ("algorithm", "steps_done", "train_seconds", "resumed_from")
        }

    def announce(self, ctx: RunContext) -> list[str]:
        """Why tuning against a target stopped, with the last check's gain (nothing for fixed steps)."""
        manifest = tuning_manifest(ctx)
        stopping = (manifest or {}).get("stopping") or {}
        if stopping.get("target_gain") is None:
            return []
        last = stopping["checks"][-1] if stopping["checks"] else None
        gain = (
            f"; last check (step {last['step']}): held-out gain {last['gain']['value']:.3f} "
            f"[{last['gain']['low']:.3f}, {last['gain']['high']:.3f}] on {last['gain']['n']} prompts"
            if last
            else ""
        )
        return [
            f"tuning stopped after {manifest['steps_done']} steps ({stopping['reason']}: "
            f"{stopping['explanation']}, target {stopping['target_gain']:g}){gain}"
        ]

    def result(self, ctx: RunContext) -> dict[str, Any]:
        """The tuning manifest without its curves, for a model this run tuned or was given."""
        manifest = tuning_manifest(ctx)
        return {"tune": {k: v for k, v in manifest.items() if k != "curves"}} if manifest else {}


def check_prompts(ctx: RunContext) -> list[str]:
    """The held-out prompts tuning against ``tune.target_gain`` checks its gain on: the train split's prompts
    right after the training prompts (so none is trained on, and none is an evaluation prompt); none when
    tuning runs a fixed number of steps."""
    tune = ctx.config.tune
    if tune.target_gain is None:
        return []
    return review_prefixes(ctx, "train", tune.n_train_prompts + tune.eval_prompts)[tune.n_train_prompts :]


def tuning_manifest(ctx: RunContext) -> dict[str, Any] | None:
    """The tuned model's ``irmscope_manifest.json`` (curves included), if it was tuned by irmscope."""
    path = Path(ctx.tuned_spec or "") / "irmscope_manifest.json"
    return json.loads(path.read_text()) if ctx.tuned_spec and path.is_file() else None
