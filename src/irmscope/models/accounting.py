"""Always-on token accounting: how many tokens every model pass processed, by kind of pass.

Every model irmscope loads (and the models TRL loads for tuning) carries one forward pre-hook that adds the
tokens of each call to the process-wide :data:`TOTALS`, sorted into three kinds whose per-token costs
differ (``benchmarks/bench_pipeline.py`` prices each kind to give a stage's compute floor):

- ``forward``: a plain pass without gradients (scoring, activation capture, a generation's prompt
  prefill), counted as the real tokens of the batch (its attention mask), so padding is not counted; a
  pass of several tokens per row on top of a key-value cache counts its new tokens the same way;
- ``backward``: a pass with gradients switched on, counted the same way; in irmscope that happens only
  where a backward follows (tuning, gradient attributions), so it is priced as a forward-backward pass;
- ``sampled``: a decoding step that reuses a key-value cache (one new token per row, as in
  ``model.generate``), counted as the new tokens fed.

A pass run with bfloat16 matrix products (under ``torch.autocast``, as :mod:`irmscope.models.precision`
runs passes that only sample or read activations, and as tuning with ``tune.precision`` bfloat16 runs its
training passes) is counted apart, as ``forward_bfloat16``, ``backward_bfloat16`` or ``sampled_bfloat16``: it
costs less per token, and the benchmark prices it apart.

What is counted is the work done, not the least work a stage could do: a text read twice is counted twice.
A pass stopped after its deepest site (``irmscope.models.hooks.stop_after_deepest``) counts the share of
the blocks it ran, in its own kind: a pass stopped after block 14 of 30 counts half its tokens (the
embedding and the skipped unembedding are left out of that share, so it slightly overstates a short pass).
The hook is one Python call per model call (not per layer), so it costs nothing measurable beside the pass
itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

#: the attribute that marks a module as counted, so a model is never counted twice
_MARK = "_irmscope_counts_tokens"


@dataclass
class TokenCounts:
    """Tokens processed, by kind of pass (see the module docstring)."""

    forward: int = 0
    backward: int = 0
    sampled: int = 0
    forward_bfloat16: int = 0
    sampled_bfloat16: int = 0
    backward_bfloat16: int = 0

    def minus(self, earlier: TokenCounts) -> TokenCounts:
        return TokenCounts(**{k: v - getattr(earlier, k) for k, v in asdict(self).items()})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


#: the running totals of this process
TOTALS = TokenCounts()


def _cache_length(past: Any) -> int:
    """Tokens already in a key-value cache (a transformers ``Cache`` or the legacy tuple of tuples)."""
    if past is None:
        return 0
    if hasattr(past, "get_seq_length"):
        return int(past.get_seq_length())
    try:
        return int(past[0][0].shape[-2])
    except (IndexError, TypeError, AttributeError):
        return 0


def real_tokens(ids: torch.Tensor, mask: torch.Tensor | None) -> int:
    """The tokens a pass counts: the attention mask's real ones when it covers ``ids``, else all of them."""
    return int(mask.sum()) if isinstance(mask, torch.Tensor) and mask.shape == ids.shape else ids.numel()


def _in_bfloat16(device: torch.device) -> bool:
    """Whether passes on ``device`` now run with bfloat16 matrix products (an enabled bfloat16 autocast)."""
    kind = device.type if device.type in ("cpu", "cuda") else "cpu"
    return torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16


def pass_kind(ids: torch.Tensor, mask: Any, cache: Any) -> tuple[str, int]:
    """The kind of pass a call of ``ids`` (with ``mask`` and key-value ``cache``) is, and the tokens it
    counts (see the module docstring)."""
    on_cache = _cache_length(cache) > 0 or isinstance(mask, torch.Tensor) and mask.shape[-1] > ids.shape[-1]
    suffix = "_bfloat16" if _in_bfloat16(ids.device) else ""
    if on_cache and ids.shape[-1] == 1:
        return "sampled" + suffix, ids.numel()
    if on_cache and isinstance(mask, torch.Tensor):
        mask = mask[..., -ids.shape[-1] :]  # the new tokens' part of a mask over cache + new tokens
    return ("backward" if torch.is_grad_enabled() else "forward") + suffix, real_tokens(ids, mask)


def _count_call(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is None:
        ids = kwargs.get("inputs_embeds")
        if ids is None:
            return
        ids = ids[..., 0]
    cache = kwargs.get("past_key_values", kwargs.get("cache"))  # either name (irmscope.models.kv_cache)
    kind, tokens = pass_kind(ids, kwargs.get("attention_mask"), cache)
    setattr(TOTALS, kind, getattr(TOTALS, kind) + tokens)


def count_tokens(model: torch.nn.Module) -> torch.nn.Module:
    """Count the tokens of every call of ``model`` into :data:`TOTALS` (once; a PEFT wrapper is counted
    through the model it wraps, whose forward every call and every ``generate`` step reaches)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(inner, _MARK, False):
        inner.register_forward_pre_hook(_count_call, with_kwargs=True)
        setattr(inner, _MARK, True)
    return model


@contextmanager
def counted() -> Iterator[TokenCounts]:
    """``with counted() as tokens: ...``: on exit, ``tokens`` holds what the block processed."""
    start = TokenCounts(**TOTALS.to_dict())
    tokens = TokenCounts()
    try:
        yield tokens
    finally:
        for key, value in TOTALS.minus(start).to_dict().items():
            setattr(tokens, key, value)


def count_stopped_pass(
    model: torch.nn.Module, kind: str, tokens: int, blocks_run: int, n_blocks: int
) -> None:
    """Count a pass that ``model`` stopped after ``blocks_run`` of its ``n_blocks`` blocks as that share of
    a whole pass: it was counted whole on entry as ``tokens`` of ``kind`` (:func:`pass_kind`, taken before
    the pass, which may have written to its cache), so the share it skipped is taken back from that kind
    (only for a model that is counted at all)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(inner, _MARK, False) and 0 < blocks_run < n_blocks:
        setattr(TOTALS, kind, getattr(TOTALS, kind) - round(tokens * (n_blocks - blocks_run) / n_blocks))
