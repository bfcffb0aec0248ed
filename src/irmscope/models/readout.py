"""The mean-pooled residual stream of a text: the read-out the probes, inverse RL and a read-out reward
share, so a reward fitted on stored read-outs scores new texts on exactly the same features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from irmscope.errors import IrmscopeError
from irmscope.models.adapters import site_name
from irmscope.models.generation import batches
from irmscope.models.hooks import capture_activations
from irmscope.models.loading import LoadedModel


def pooling_weights(mask: torch.Tensor) -> torch.Tensor:
    """``[batch, seq]`` weights that average each row's real tokens with the first left out (an attention
    sink with an outsized norm), unless it is the row's only token. Either padding side."""
    weights = mask.clone().float()
    rows, first = torch.arange(len(mask)), mask.float().argmax(1)
    weights[rows, first] = weights[rows, first] * (mask.sum(1) == 1)
    return weights / weights.sum(1, keepdim=True)


def leading_special_tokens(tokenizer) -> list[int]:
    """The tokens ``tokenizer`` puts before every text it encodes by default: a BOS token for Llama and
    Gemma tokenizers, none for GPT-2's or SmolLM2's. Sampling encodes prompts that way, so the policy was
    given them, and a reading of its samples gives them again."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def encode_pairs(
    lm: LoadedModel, prompts: Sequence[str], continuations: Sequence[str], max_length: int | None
):
    """Right-padded ids of prompt + continuation (cut to ``max_length``), their mask, and each row's prompt
    length in tokens. Prompt and continuation are tokenised apart; the tokenizer's leading special tokens
    (:func:`leading_special_tokens`, e.g. BOS) open every row and count as prompt."""
    tok = lm.tokenizer
    lead = leading_special_tokens(tok)
    rows, prompt_lengths = [], []
    for prompt, continuation in zip(prompts, continuations, strict=True):
        p = lead + (tok(prompt, add_special_tokens=False)["input_ids"] if prompt else [])
        c = tok(continuation, add_special_tokens=False)["input_ids"]
        row = (p + c)[:max_length]
        if len(row) == len(lead):
            raise IrmscopeError("an empty text cannot be probed; drop empty prompts/continuations first")
        rows.append(row)
        prompt_lengths.append(min(len(p), len(row)))
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask, torch.tensor(prompt_lengths)


@torch.no_grad()
def mean_pooled_residual(
    lm: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    layer: int,
    max_length: int | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """``[n, width]``: each prompt + continuation's residual stream leaving block ``layer``, averaged over
    its tokens by :func:`pooling_weights`. Prompt and continuation are tokenised apart
    (:func:`encode_pairs`), as the probes' read-outs are, so a reward fitted on those scores a completion
    on the tokens its policy wrote, even where the prompt ends mid-word."""
    site = site_name(layer % lm.n_layers, "hook_resid_post")
    device = next(lm.model.parameters()).device
    rows = []
    for _, prompt_chunk, continuation_chunk in batches(prompts, continuations, size=batch_size):
        ids, mask, _ = encode_pairs(lm, prompt_chunk, continuation_chunk, max_length)
        acts = capture_activations(lm.model, [site], ids.to(device), mask.to(device))[site].float()
        rows.append(torch.einsum("bsd,bs->bd", acts, pooling_weights(mask).to(acts.device)).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, lm.model.config.hidden_size))
