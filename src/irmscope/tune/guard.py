"""A TRL/transformers callback that records the training curves and stops a run that has gone bad.

A run stops (and irmscope keeps the last good checkpoint) when the loss or the gradient norm turns NaN/inf,
or when the reward *collapses*: its running mean over the last ``window`` logged steps falls more than
``collapse_drop`` below the mean of the first ``window`` steps. The curves (reward, KL, loss per step) go
into the tuned model's manifest; a resumed run takes up those its checkpoint logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainerCallback

# curve name -> the key TRL logs it under (GRPO/RLOO: reward, kl; DPO: its implicit-reward statistics)
_CURVE_KEYS = {
    "reward": "reward",
    "kl": "kl",
    "loss": "loss",
    "grad_norm": "grad_norm",
    "dpo_margin": "rewards/margins",
    "dpo_accuracy": "rewards/accuracies",
}


@dataclass
class TrainingGuard(TrainerCallback):
    """Collect curves and stop on NaN loss or collapsing reward (see the module docstring)."""

    collapse_drop: float = 3.0
    window: int = 5
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    failure: str | None = None
    last_good_step: int = 0

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run starts with the curves its checkpoint's log history holds."""
        self.curves = {}
        for logs in state.log_history:
            self._record(logs.get("step", 0), logs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        step = state.global_step
        self._record(step, logs)
        for key in ("loss", "grad_norm"):
            if key in logs and not math.isfinite(float(logs[key])):
                self._fail(control, f"the {key.replace('_', ' ')} became {logs[key]} at step {step}")
                return
        rewards = [value for _, value in self.curves.get("reward", []) if math.isfinite(value)]
        if len(rewards) >= 2 * self.window:
            start = sum(rewards[: self.window]) / self.window
            recent = sum(rewards[-self.window :]) / self.window
            if recent < start - self.collapse_drop:
                self._fail(
                    control,
                    f"the reward collapsed at step {step} (mean of the last {self.window} "
                    f"steps {recent:.2f}, first {self.window} steps {start:.2f})",
                )
                return
        self.last_good_step = step

    def _record(self, step: int, logs: dict) -> None:
        for name, key in _CURVE_KEYS.items():
            if key in logs:
                self.curves.setdefault(name, []).append((step, float(logs[key])))

    def on_step_end(self, args, state, control, **kwargs):
        if self.failure:  # never save a checkpoint after the run went bad
            control.should_save = False
            control.should_training_stop = True

    def _fail(self, control, why: str) -> None:
        self.failure = why
        control.should_training_stop = True
        control.should_save = False
