"""Activations and next-token log-probabilities of single-token words placed after shared contexts.

Every word-level elicitation needs the model's state at a word *in context*: the contrastive triples put a
positive, a neutral and a negative word after the same prefix, and reconstructing a lexicon puts hundreds of
words after the same few prefixes. Running ``prefix + word`` as a fresh sequence for each word repeats the
prefix's work once per word. Here each prefix runs once with the key/value cache on, the cache is repeated
for its words, and only the words' single tokens run on top of it: the cost per word is one token, not a
whole sequence. Prefixes are batched with others of their length and left-padded; position ids are counted
over real tokens only, so a padded row sees what it would see alone (to the float rounding, which depends on
the batch).

A word is identified by its token id *after a space* (``" good"``); :func:`word_token_ids` finds them and
drops words that are not one token.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from irmscope.errors import IrmscopeError
from irmscope.models.generation import batches
from irmscope.models.hooks import capture, stop_after_deepest
from irmscope.models.kv_cache import cache_argument, returned_cache
from irmscope.models.loading import LoadedModel
from irmscope.models.precision import matmul_precision
from irmscope.validation import Precision


def word_token_ids(tokenizer, words: Iterable[str]) -> dict[str, int]:
    """``{word: token id of " word"}`` for the words that are a single token after a space.

    The words are encoded in one call of the tokenizer, without padding or truncation: the audit and the
    policy shift look up a whole vocabulary (about 31,600 words), and one call per word took seconds in every
    stage that asked. (A fast tokenizer's backend encoder would be faster still, but it keeps the padding a
    previous padded call set, which would pad every word to the longest and find none of one token.)"""
    unique = list(dict.fromkeys(words))
    if not unique:
        return {}
    encoded = tokenizer(
        [" " + word for word in unique], add_special_tokens=False, padding=False, truncation=False
    )["input_ids"]
    return {word: ids[0] for word, ids in zip(unique, encoded, strict=True) if len(ids) == 1}


@dataclass
class Continuations:
    """What :func:`continuation_activations` returns.

    ``activations[site]`` has shape ``[n_contexts, n_words, width]``: the site at the word's token.
    ``log_probs`` has shape ``[n_contexts, n_words]``: log p(word | context) under the model.
    """

    activations: dict[str, torch.Tensor]
    log_probs: torch.Tensor


def context_token_ids(lm: LoadedModel, contexts: Sequence[str], max_context_tokens: int) -> list[list[int]]:
    """Each context's token ids (no special tokens), cut to its last ``max_context_tokens`` (the words
    nearest the slot), in one call of the tokenizer."""
    encoded = lm.tokenizer(list(contexts), add_special_tokens=False, padding=False, truncation=False)
    rows = [ids[-max_context_tokens:] for ids in encoded["input_ids"]]
    if any(not ids for ids in rows):
        raise IrmscopeError("a context is empty; every word needs a non-empty prefix before it")
    return rows


def left_padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of token-id ``rows`` left-padded with ``pad`` to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def encode_contexts(
    lm: LoadedModel, contexts: Sequence[str], max_context_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of ``contexts`` cut to their last ``max_context_tokens`` tokens, left-padded."""
    return left_padded(context_token_ids(lm, contexts, max_context_tokens), lm.tokenizer.pad_token_id)


@torch.no_grad()
def continuation_activations(
    lm: LoadedModel,
    contexts: Sequence[str],
    word_ids: Sequence[int] | Sequence[Sequence[int]],
    *,
    sites: Sequence[str] = (),
    max_context_tokens: int = 48,
    contexts_per_batch: int = 16,
    rows_per_step: int = 256,
    precision: Precision = "float32",
    progress: bool = False,
) -> Continuations:
    """Run each context once, then each word's token after it; read ``sites`` at the word token.

    ``word_ids`` is either one list of token ids used after every context, or one list per context (all of
    the same length, e.g. the positive, neutral and negative word of each triple). Contexts are cut to their
    last ``max_context_tokens`` tokens. Each word step runs at most ``rows_per_step`` (context, word) rows,
    which bounds the repeated cache's memory (SmolLM2-135M: about 2 MB per row at 48 context tokens).
    Activations come back as float32 on the CPU.

    ``precision`` sets the matrix products of every pass (:mod:`irmscope.models.precision`). The
    elicitation reads only the sites, and asks for bfloat16 where it is native (the activations within 2%
    of float32 in the tests); the default, float32, keeps ``log_probs`` exact.
    """
    if not contexts:
        raise IrmscopeError("no contexts given; pass at least one prefix to place words after")
    per_context = len(word_ids) > 0 and not isinstance(word_ids[0], int | np.integer)
    table = torch.tensor([list(w) for w in word_ids]) if per_context else torch.tensor([list(word_ids)])
    if table.numel() == 0:
        raise IrmscopeError("no words given; pass at least one single-token word id")
    if per_context and table.shape[0] != len(contexts):
        raise IrmscopeError(f"{len(contexts)} contexts but {table.shape[0]} rows of word ids")
    model = lm.model
    device = next(model.parameters()).device
    rows = context_token_ids(lm, contexts, max_context_tokens)
    # batches of contexts of similar length, since a batch is padded to its longest: the demo's triple
    # prefixes run from 1 to 48 tokens, and batches in their own order were mostly padding
    order = np.argsort([len(r) for r in rows], kind="stable")
    acts: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    log_probs: list[torch.Tensor] = []
    with matmul_precision(precision, device):
        for _, batch_rows in batches(
            order, size=contexts_per_batch, progress=progress, desc="contexts", leave=False
        ):
            ids, mask = left_padded([rows[i] for i in batch_rows], lm.tokenizer.pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
            )
            words = table[torch.as_tensor(batch_rows)] if per_context else table.expand(len(batch_rows), -1)
            words = words.to(device)
            log_probs.append(torch.log_softmax(out.logits[:, -1].float(), -1).gather(1, words).cpu())
            if not sites:
                continue
            read = _word_steps(model, returned_cache(out), mask, positions, words, sites, rows_per_step)
            for site in sites:
                acts[site].append(read[site])
    back = torch.as_tensor(np.argsort(order, kind="stable"))  # from length order to the contexts' order
    return Continuations(
        activations={site: torch.cat(parts)[back] for site, parts in acts.items()},
        log_probs=torch.cat(log_probs)[back],
    )


def _word_steps(
    model: torch.nn.Module,
    cache: Any,
    mask: torch.Tensor,
    positions: torch.Tensor,
    words: torch.Tensor,
    sites: Sequence[str],
    rows_per_step: int,
) -> dict[str, torch.Tensor]:
    """``{site: [contexts, words, width]}``: each of ``words`` (``[contexts, n_words]``) run as one token on
    top of its context's key/value ``cache``, at most ``rows_per_step`` rows at a time."""
    n_contexts = words.shape[0]
    next_position = positions[:, -1:] + 1
    rows: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    words_per_step = max(1, rows_per_step // n_contexts)
    for w0 in range(0, words.shape[1], words_per_step):
        block = words[:, w0 : w0 + words_per_step]  # [contexts, k]
        k = block.shape[1]
        step_cache = copy.deepcopy(cache)
        step_cache.batch_repeat_interleave(k)
        step_mask = torch.cat([mask.repeat_interleave(k, 0), mask.new_ones(n_contexts * k, 1)], dim=1)
        step_ids = block.reshape(-1, 1)
        # the sites are all this step reads: it stops after the deepest one (no later block, no
        # unembedding), and its cache, a copy, is dropped
        with capture(model, sites) as cap, stop_after_deepest(model, sites, step_ids, step_mask, step_cache):
            model(
                input_ids=step_ids,
                attention_mask=step_mask,
                position_ids=next_position.repeat_interleave(k, 0),
                **cache_argument(step_cache),
                use_cache=True,
                logits_to_keep=1,
            )
        for site in sites:
            rows[site].append(cap[site][:, -1].float().cpu().reshape(n_contexts, k, -1))
    return {site: torch.cat(parts, dim=1) for site, parts in rows.items()}
