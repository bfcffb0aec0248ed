"""Score many sets of completions to the same prompts, reading the prompts once.

A study that compares conditions (steering scales, say) samples one completion per prompt in every
condition and scores each set with one model. Scoring prompt + completion afresh for every set runs the
prompts' tokens once per set, though they never change: in the steering study the prompts were half of
what the fluency judge read. :class:`CachedPrompts` runs each batch of prompts once with the key-value
cache on, keeps the cache, and runs only a set's completion tokens on top of a copy of it.

Tokens are exactly :func:`~irmscope.models.readout.encode_pairs`' (the tokenizer's leading special tokens,
then the prompt and the completion tokenised apart), so the numbers are those of a fresh pass over prompt +
completion to float rounding (tested against :func:`~irmscope.models.reading.completion_statistics`).
Prompts are left-padded within a batch, completions right-padded, and position ids count real tokens only,
so a padded row sees what it would see alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from irmscope.errors import IrmscopeError
from irmscope.models.kv_cache import cache_argument, returned_cache
from irmscope.models.loading import LoadedModel
from irmscope.models.readout import leading_special_tokens


class CachedPrompts:
    """``prompts`` read once by ``lm`` in batches of ``batch_size``; :meth:`completion_nll` then scores a
    set of completions to them (one per prompt, in order) on the kept caches. The caches stay in memory:
    about 46 KB per prompt token for SmolLM2-135M."""

    def __init__(self, lm: LoadedModel, prompts: Sequence[str], batch_size: int = 32) -> None:
        if not prompts:
            raise IrmscopeError("no prompts to read; give at least one")
        self.lm, self.n = lm, len(prompts)
        tok, lead = lm.tokenizer, leading_special_tokens(lm.tokenizer)
        rows = [lead + tok(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
        if any(not row for row in rows):
            raise IrmscopeError("an empty prompt gives no state to continue from; drop empty prompts")
        self._device = next(lm.model.parameters()).device
        self._batches: list[tuple[slice, torch.Tensor, Any, torch.Tensor]] = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                width = max(len(row) for row in chunk)
                ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in chunk])
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk])
                ids, mask = ids.to(self._device), mask.to(self._device)
                out = lm.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True,
                    logits_to_keep=1,  # only the last position predicts a completion token
                )
                first = torch.log_softmax(out.logits[:, -1].float(), -1)  # the first completion token's
                self._batches.append((slice(start, start + len(chunk)), mask, returned_cache(out), first))

    @torch.no_grad()
    def completion_nll(self, completions: Sequence[str]) -> np.ndarray:
        """Each completion's mean negative log-likelihood per token given its prompt (0 for an empty one),
        as :func:`~irmscope.models.reading.completion_statistics` gives it."""
        if len(completions) != self.n:
            raise IrmscopeError(f"{len(completions)} completions for {self.n} prompts; give one per prompt")
        tok, model = self.lm.tokenizer, self.lm.model
        out = np.zeros(self.n)
        for rows, prompt_mask, cache, first in self._batches:
            encoded = [tok(c, add_special_tokens=False)["input_ids"] for c in completions[rows]]
            width = max(len(c) for c in encoded)
            if width == 0:
                continue
            ids = torch.tensor([c + [tok.pad_token_id] * (width - len(c)) for c in encoded]).to(self._device)
            mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in encoded]).to(self._device)
            logits = model(
                input_ids=ids,
                attention_mask=torch.cat([prompt_mask, mask], dim=1),
                position_ids=prompt_mask.sum(1, keepdim=True) + torch.arange(width, device=self._device),
                **cache_argument(copy.deepcopy(cache)),  # the kept cache must not grow
                use_cache=True,
            ).logits
            later = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
            token = torch.cat([first.gather(-1, ids[:, :1]), later], dim=1)
            nll = -(token * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[rows] = nll.cpu().numpy()
        return out
