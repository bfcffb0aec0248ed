"""Tuning against a target: check the held-out gain every few steps and stop once it is clear, or stalled.

A fixed number of steps can end with a subject that has not learned its reward (a reward the base model knows
nothing of, such as a planted lexicon, may need more steps). With ``tune.target_gain`` set, every
``tune.eval_every`` steps the current policy and the base model each complete the same held-out prompts with
the same sampling seed, and :func:`~irmscope.tune.evaluate.paired_gain` gives the gain in mean reward with its
bootstrap 95% interval. Training stops (:func:`stop_reason`)

- ``target``: once the interval's lower bound exceeds ``target_gain``;
- ``plateau`` (a heuristic): once the gain's point estimate has not beaten the best earlier check for
  :data:`PLATEAU_CHECKS` checks in a row;
- ``max_steps``: otherwise, at ``tune.max_steps``.

The checks sample under :func:`torch.random.fork_rng`, so they leave training's random stream as it was: up
to its stopping step a run against a target trains exactly as a fixed-steps run. Every check goes to
:data:`CHECKS_FILE` beside the checkpoints; the step that stops the run is always checkpointed, so a run
killed before its model was saved resumes there and finishes without training further.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from irmscope.config import TuneSection
from irmscope.io import write_json
from irmscope.models.generation import Sampling
from irmscope.models.loading import LoadedModel
from irmscope.rewards import Reward
from irmscope.stats import Estimate
from irmscope.tune.evaluate import paired_gain, sampled_rewards

CHECKS_FILE = "target_checks.json"
#: checks in a row without a better point estimate that count as a plateau
PLATEAU_CHECKS = 3
#: why a run stopped, as the manifest's ``stopping.reason`` says it, and in words
REASONS = {
    "steps": "ran the fixed tune.steps (no tune.target_gain)",
    "target": "the held-out gain's 95% lower bound exceeded tune.target_gain",
    "plateau": f"the held-out gain's point estimate did not beat its best for {PLATEAU_CHECKS} checks "
    "(a heuristic)",
    "max_steps": "reached tune.max_steps before the gain's lower bound exceeded tune.target_gain",
}


def stop_reason(checks: Sequence[dict[str, Any]], target: float) -> str | None:
    """``"target"``, ``"plateau"`` or ``None`` (go on) after the latest of ``checks``
    (``{"step", "gain": Estimate.as_dict()}``, in step order)."""
    if not checks:
        return None
    if checks[-1]["gain"]["low"] > target:
        return "target"
    if len(checks) > PLATEAU_CHECKS:
        best_before = max(check["gain"]["value"] for check in checks[:-PLATEAU_CHECKS])
        if all(check["gain"]["value"] <= best_before for check in checks[-PLATEAU_CHECKS:]):
            return "plateau"
    return None


def recorded_checks(folder: Path, up_to_step: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The checks (and the stop, if any) an earlier run of this tuning recorded in ``folder`` at steps up to
    ``up_to_step`` (the checkpoint it resumes from); later ones are redone."""
    path = folder / CHECKS_FILE
    if not path.is_file():
        return [], None
    recorded = json.loads(path.read_text())
    checks = [check for check in recorded["checks"] if check["step"] <= up_to_step]
    stop = recorded.get("stop")
    return checks, stop if stop and stop["step"] <= up_to_step else None


class GainMeter:
    """The paired gain of a policy over the base model on held-out prompts (the base model's completions
    are sampled once, as it never changes)."""

    def __init__(
        self, base: LoadedModel, reward: Reward, prompts: Sequence[str], *, max_new_tokens: int, seed: int
    ) -> None:
        self.base, self.reward, self.prompts = base, reward, list(prompts)
        self.sampling = Sampling(max_new_tokens=max_new_tokens, seed=seed, progress=False)
        self._base_scores: np.ndarray | None = None

    def __call__(self, policy: torch.nn.Module) -> Estimate:
        """The gain of ``policy`` (the model being trained, a PEFT model or not); its train mode is kept."""
        inner = policy.get_base_model() if hasattr(policy, "get_base_model") else policy  # LoRA stays active
        was_training = policy.training
        try:
            with torch.random.fork_rng():  # training's random stream goes on as if no check had run
                if self._base_scores is None:
                    _, self._base_scores = self._sample(self.base)
                _, scores = self._sample(LoadedModel(inner, self.base.tokenizer, "policy"))
        finally:
            policy.train(was_training)
        return paired_gain(scores, self._base_scores, seed=self.sampling.seed)

    def _sample(self, lm: LoadedModel) -> tuple[list[str], np.ndarray]:
        return sampled_rewards(lm, self.prompts, self.reward, self.sampling)


class TargetStop(TrainerCallback):
    """Check the held-out gain every ``eval_every`` steps and stop as the module docstring says."""

    def __init__(self, meter: GainMeter, settings: TuneSection, folder: Path, report=None) -> None:
        if settings.target_gain is None or settings.eval_every is None:
            raise ValueError("TargetStop needs tune.target_gain and tune.eval_every")
        self.meter, self.target, self.every = meter, settings.target_gain, settings.eval_every
        self.folder = folder
        self.report = report  # called with one line per check (a progress bar's write), or None
        self.checks: list[dict[str, Any]] = []
        self.stop: dict[str, Any] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.checks, self.stop = recorded_checks(self.folder, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if self.stop is not None or step % self.every:
            return
        gain = self.meter(model)
        self.checks.append({"step": step, "gain": gain.as_dict()})
        reason = stop_reason(self.checks, self.target)
        if reason is not None:
            self.stop = {"step": step, "reason": reason}
            control.should_training_stop = True
            control.should_save = True  # a resumed run restarts at the stopping step itself
        write_json(self.folder / CHECKS_FILE, {"checks": self.checks, "stop": self.stop})
        if self.report is not None:
            verdict = f"stopping: {reason}" if reason else "going on"
            self.report(
                f"check at step {step}: held-out gain {gain} on {gain.n} prompts, "
                f"target lower bound > {self.target:g}; {verdict}"
            )

    def stopping(self) -> dict[str, Any]:
        """The manifest's ``stopping`` section once training has ended."""
        reason = self.stop["reason"] if self.stop else "max_steps"
        return {
            "target_gain": self.target,
            "eval_every": self.every,
            "eval_prompts": len(self.meter.prompts),
            "plateau_checks": PLATEAU_CHECKS,
            "reason": reason,
            "explanation": REASONS[reason],
            "checks": self.checks,
        }
