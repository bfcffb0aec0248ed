"""Passes that only sample or read activations, run with bfloat16 matrix products where that is faster.

On a CPU with native bfloat16 (AVX512-BF16 or AMX; the 2-core AMD EPYC these numbers come from has it) a
bfloat16 matrix product runs at about twice the float32 rate, and a 135M-parameter model's passes are
almost all matrix products. ``benchmarks/bench_pipeline.py`` measures both precisions on the machine it
runs on.

Where it is used, and where not:

* **Used** for sampling (the evaluation, whose completions the pipeline's audit reuses, ablations,
  steering) and for activations that feed a fit (the SAEs' training and held-out activations, the
  elicitation's triples and words, CCS's contrast pairs, the ratings probe's read-outs). A sampled
  completion is one draw from the model, and bfloat16 products move its next-token log-probabilities by far
  less than one draw varies; both models of a comparison are sampled alike.
* **Not used** where log-probabilities are compared or differenced (the policy shift, the audit's word
  shifts, DPO's implicit reward, the read-samples stage): there a rounding error of a few hundredths of a
  nat is the size of the effects measured. Those passes stay float32 whatever is set here.
* **Tuning** is a case of its own: ``tune.precision`` bfloat16 is TrainingArguments' bf16 mixed precision
  (the policy's and the reference's log-probabilities and the backward; the master weights and the
  optimiser stay float32), the standard way to train on hardware with bfloat16. It changes the tuned
  model, as any change of the arithmetic does (the same recipe's gain already differs between CPUs), so it
  defaults to float32, as the committed experiments were tuned, and the demo preset asks for ``auto``.

Library functions that take a ``precision`` default to float32, exact and the same on every machine; the
pipeline's config asks for ``auto`` (``generation.precision``, ``activations.precision``,
``elicit.precision``, ``probes.precision``), except the ``smoke`` preset, whose numbers the tests compare
with a stored reference.

It is ``torch.autocast``, not a bfloat16 copy of the weights: autocast rounds only the inputs of matrix
products (and caches each weight's rounded copy for the duration of the block), so the residual stream and
the norms stay float32, and the float32 weights stay in place for the passes that need them. Interventions
need no casts: an SAE ablation's own products (encoding, the removed reconstruction) run in bfloat16 too,
and a steering vector adds in float32. The rounded copies are cached only for weights that require grad
(loaded models do); a frozen weight is rounded again at every call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal, get_args

import torch

from irmscope.errors import IrmscopeError
from irmscope.provenance import cpu_multiplies_bfloat16
from irmscope.validation import Precision

#: what a config or caller may ask for: ``auto`` is bfloat16 where the device has native bfloat16 products
PRECISIONS: tuple[str, ...] = get_args(Precision)


def native_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (faster than float32, not emulated); a CPU
    does with AVX512-BF16 or AMX (:func:`irmscope.provenance.cpu_multiplies_bfloat16`)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return cpu_multiplies_bfloat16()
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
