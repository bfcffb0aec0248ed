"""Sampling completions from a policy, reproducibly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel


@torch.no_grad()
def generate_completions(
    lm: LoadedModel,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    processor_for_batch: Callable[[torch.Tensor], Any] | None = None,
    desc: str = "generating",
) -> list[str]:
    """One sampled completion per prompt (the completion text only, without the prompt).

    Sampling is pure ancestral sampling by default (temperature 1, no top-k/top-p), as in the RL setting
    whose policy we study. Every completion is exactly ``max_new_tokens`` long (end-of-text is suppressed):
    the Eq. 3 reward is a sum over tokens, so completions of equal length keep base and tuned models
    comparable. Each batch is seeded with ``seed + batch index``, so the same call gives the same
    completions whatever else ran before. ``processor_for_batch(attention_mask)``, if given, returns a logits
    processor for that batch (see :func:`generate_amplified`).
    """
    from transformers import LogitsProcessorList

    if not prompts:
        raise IrmscopeError("no prompts to complete; check the prompt dataset is not empty")
    completions: list[str] = []
    device = next(lm.model.parameters()).device
    batches = range(0, len(prompts), batch_size)
    for index, start in enumerate(tqdm(batches, desc=desc, unit="batch", disable=not progress)):
        enc = lm.tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True).to(
            device
        )
        torch.manual_seed(seed + index)
        processors = [processor_for_batch(enc["attention_mask"])] if processor_for_batch else []
        out = lm.model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            pad_token_id=lm.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList(processors),
        )
        completions += lm.tokenizer.batch_decode(
            out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
    return completions


class _AmplifiedLogits:
    """A generation logits processor: ``logits_tuned + alpha * (logits_tuned - logits_base)``.

    The base model runs alongside with its own key-value cache, fed one new token per step. Rows are
    left-padded prompts followed by generated tokens, so the attention mask is the prompt mask extended by
    ones (end-of-text is suppressed, so no row stops early).
    """

    def __init__(self, base_model: torch.nn.Module, prompt_mask: torch.Tensor, alpha: float) -> None:
        self.base_model = base_model
        self.mask = prompt_mask
        self.alpha = alpha
        self.past = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.past is None:
            new_ids = input_ids
        else:
            new_ids = input_ids[:, -1:]
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        positions = (self.mask.cumsum(dim=1) - 1).clamp(min=0)[:, -new_ids.shape[1] :]
        out = self.base_model(
            input_ids=new_ids,
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.past,
            use_cache=True,
        )
        self.past = out.past_key_values
        base_logits = out.logits[:, -1].to(scores.dtype)
        amplified = scores + self.alpha * (scores - base_logits)
        return torch.where(torch.isfinite(scores), amplified, scores)  # keep tokens masked to -inf masked


@torch.no_grad()
def generate_amplified(
    tuned: LoadedModel,
    base: LoadedModel,
    prompts: Sequence[str],
    alpha: float,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Logit-difference amplification sampling (the probe study): sample from
    ``softmax(logits_tuned + alpha * (logits_tuned - logits_base))``, which exaggerates whatever tuning
    changed (``alpha = 0`` is plain sampling from the tuned model)."""
    return generate_completions(
        tuned,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        processor_for_batch=lambda mask: _AmplifiedLogits(base.model, mask, alpha),
        desc=f"amplified sampling (alpha={alpha:g})",
    )
