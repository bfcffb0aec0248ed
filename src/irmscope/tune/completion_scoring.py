"""Score only the completion tokens when TRL computes log-probabilities on a CPU.

TRL's online trainers get per-token log-probabilities through a fused LM head (``trl.trainer.utils.
add_fused_lm_head``): the vocabulary projection runs in tiles, never holding the ``[tokens, vocab]`` logits.
On a GPU with Triton it projects only the positions that carry a label (the completion tokens). On any
other device it projects every position, prompt and padding included, so that the tile shapes never change
and a compiler (AWS Neuron) never recompiles. A CPU compiles nothing, and on the demo's batches the prompt
is two thirds of the positions: TRL projects about three times the tokens it needs, in the reference
model's pass, the policy's pass and the policy's backward pass. On this machine that was a third of each
tuning step.

:func:`completion_positions_only` makes TRL take its own compact path on a CPU while a block runs: the same
per-row arithmetic on fewer rows, so the log-probabilities agree with the full projection to float
rounding (tested). It changes one module-level decision of TRL, ``trl.trainer.utils._use_triton`` as the
fused head reads it; the tile kernels still take their torch path, since they read their own module's
copy. A TRL without that name is left alone (it projects every position, as before).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def completion_positions_only() -> Iterator[None]:
    """While the block runs, TRL's fused LM head projects only labelled positions on a CPU as well (see the
    module docstring); TRL's own decision is restored afterwards."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # no TRL, nothing to change
        yield
        return
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return

    def compact(device: torch.device) -> bool:
        return device.type == "cpu" or original(device)

    trl_utils._use_triton = compact
    try:
        yield
    finally:
        trl_utils._use_triton = original
