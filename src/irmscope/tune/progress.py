"""One progress bar for a tuning run, in place of the dictionary transformers prints at every step.

The bar shows step k/N, the latest logged reward mean and KL (GRPO, RLOO) or loss and preference margin
(DPO), and tqdm's estimate of the time left. :func:`quiet_trainer` removes transformers' own printing
through the trainer's public callback API; the curves are still recorded by
:class:`irmscope.tune.guard.TrainingGuard`, which reads the same logs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

#: warnings the libraries raise at every step, which would print between the bar's updates: TRL 1.16 reads
#: transformers' deprecated ``is_gradient_checkpointing`` at each generation, and the filters TRL resets
#: around its own imports make Python print it again each time instead of once
EVERY_STEP_WARNINGS = (r"`is_gradient_checkpointing` is deprecated",)

#: what the bar shows from each log, by the name it shows, and the key TRL logs it under
SHOWN = {"reward": "reward", "kl": "kl", "loss": "loss", "margin": "rewards/margins"}


class TuneProgress(TrainerCallback):
    """A tqdm bar over the run's optimizer steps (a resumed run starts at its checkpoint's step)."""

    def __init__(self, desc: str = "tuning") -> None:
        self.desc = desc
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # DPO logs a loss and margins; GRPO/RLOO a reward and KL (and a loss that is not informative there)
        names = ("reward", "kl") if logs and "reward" in logs else ("loss", "margin")
        shown = {name: float(logs[SHOWN[name]]) for name in names if logs and SHOWN[name] in logs}
        if self.bar is not None and shown:
            self.bar.set_postfix({name: f"{value:.3g}" for name, value in shown.items()}, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, line: str) -> None:
        """Print ``line`` above the bar without breaking it."""
        tqdm.write(line)


@contextmanager
def quiet_steps() -> Iterator[None]:
    """While the trainer is built and trained: leave out :data:`EVERY_STEP_WARNINGS` (the libraries'
    business, not the user's; PEFT raises it once when it wraps the model), so the bar stays one line and
    starts clean; every other warning still prints."""
    with warnings.catch_warnings():
        for message in EVERY_STEP_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        yield


def quiet_trainer(trainer, desc: str | None) -> TuneProgress | None:
    """Replace transformers' printed logs and its own bar with one :class:`TuneProgress` named ``desc``
    (``None``: no bar at all)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if desc is None:
        return None
    bar = TuneProgress(desc)
    trainer.add_callback(bar)
    return bar
