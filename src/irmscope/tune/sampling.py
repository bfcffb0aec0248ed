"""Sampling completions from a policy, reproducibly."""

from __future__ import annotations

from collections.abc import Sequence

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
) -> list[str]:
    """One sampled completion per prompt (the completion text only, without the prompt).

    Sampling is pure ancestral sampling by default (temperature 1, no top-k/top-p), as in the RL setting
    whose policy we study. Every completion is exactly ``max_new_tokens`` long (end-of-text is suppressed):
    the Eq. 3 reward is a sum over tokens, so completions of equal length keep base and tuned models
    comparable. Each batch is seeded with ``seed + batch index``, so the same call gives the same
    completions whatever else ran before.
    """
    if not prompts:
        raise IrmscopeError("no prompts to complete; check the prompt dataset is not empty")
    completions: list[str] = []
    device = next(lm.model.parameters()).device
    batches = range(0, len(prompts), batch_size)
    for index, start in enumerate(tqdm(batches, desc="generating", unit="batch", disable=not progress)):
        enc = lm.tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True).to(
            device
        )
        torch.manual_seed(seed + index)
        out = lm.model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
        completions += lm.tokenizer.batch_decode(
            out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
    return completions
