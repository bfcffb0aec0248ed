"""Passes that only sample or read activations, run with bfloat16 matrix products where that is faster.

On a CPU with native bfloat16 (AVX512-BF16 or AMX; the 2-core AMD EPYC these numbers come from has it) a
bfloat16 matrix product runs at about twice the float32 rate, and a 135M-parameter model's passes are
almost all matrix products. ``benchmarks/bench_pipeline.py`` measures both precisions on the machine it
runs on.

Where it is used, and where not:

* **Used** for sampling (the evaluation, ablations, steering, the audit's completions) and for activations
  that feed a fit (the SAEs' training activations, the ratings probe's read-outs). A sampled completion
  is a draw from the model; bfloat16 products move a next-token log-probability by about 0.06 nats on
  average here, far inside what one draw varies, and both models of a comparison are sampled alike.
* **Not used** where log-probabilities are compared or differenced (the policy shift, the audit's word
  shifts, DPO's implicit reward, the read-samples stage) nor for tuning: there a 0.06-nat error is the
  size of the effects measured. Those passes stay float32 whatever is set here.

Library functions that take a ``precision`` default to float32, exact and the same on every machine; the
pipeline's config asks for ``auto`` (``generation.precision``, ``activations.precision``,
``probes.precision``), except the ``smoke`` preset, whose numbers the tests compare with a stored reference.

It is ``torch.autocast``, not a bfloat16 copy of the weights: autocast rounds only the inputs of matrix
products (and caches each weight's rounded copy for the duration of the block), so the residual stream and
the norms stay float32, the float32 weights stay in place for the passes that need them, and float32
interventions (an SAE ablation, a steering vector) mix in without casts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch

from irmscope.errors import IrmscopeError

#: what a config or caller may ask for: ``auto`` is bfloat16 where the device has native bfloat16 products
Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (faster than float32, not emulated)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> Literal["float32", "bfloat16"]:
    """The precision ``precision`` stands for on ``device``: ``auto`` becomes bfloat16 where
    :func:`native_bfloat16`, float32 elsewhere."""
    if precision not in PRECISIONS:
        raise IrmscopeError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision  # type: ignore[return-value]


@contextmanager
def matmul_precision(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block's passes with matrix products in ``precision`` (see the module docstring); float32
    leaves them as they are."""
    resolved = resolve_precision(precision, device)
    kind = torch.device(device).type
    if resolved == "float32":
        context = nullcontext()
    else:
        context = torch.autocast(device_type=kind, dtype=torch.bfloat16)
    with context:
        yield
