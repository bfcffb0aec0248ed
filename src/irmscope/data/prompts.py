"""Prompts for fine-tuning and evaluation: the first ``n`` tokens of each review.

The paper prompts the policy with 30-token IMDb prefixes and lets it complete them; the reward then scores the
completion. Cutting by *model* tokens (not words or characters) gives every prompt the same length in the
model's own units, which keeps generation lengths and batch shapes uniform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from irmscope.errors import IrmscopeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: The paper's prompt length, in tokens.
PROMPT_TOKENS = 30


def truncate_to_prefixes(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    n_tokens: int = PROMPT_TOKENS,
    min_tokens: int | None = None,
    *,
    limit: int | None = None,
) -> list[str]:
    """Return the first ``n_tokens`` tokens of each text, decoded back to a string.

    Texts are tokenized without special tokens (no BOS/EOS), so the count is of content tokens only. Texts
    with fewer than ``min_tokens`` tokens (default: ``n_tokens``) are dropped, so by default every prompt has
    exactly ``n_tokens`` tokens; with a smaller ``min_tokens`` shorter texts are kept whole.

    A prefix is also dropped when decoding and re-encoding it does not give back the same token ids (a cut in
    the middle of a multi-byte character, or a word split so that the tail re-merges differently): the
    prompt the policy later sees must be exactly the tokens that were counted. The order of the kept texts is
    preserved.

    With ``limit``, the first ``limit`` prefixes, cutting only as many texts as that takes (in blocks that
    double): a split holds thousands of reviews where a run asks for a few hundred prompts. Each text is cut
    on its own, so they are the first ``limit`` of the prefixes of every text.
    """
    if n_tokens < 1:
        raise IrmscopeError(f"n_tokens must be at least 1, got {n_tokens}")
    min_tokens = n_tokens if min_tokens is None else min_tokens
    if not 1 <= min_tokens <= n_tokens:
        raise IrmscopeError(f"min_tokens must be between 1 and n_tokens={n_tokens}, got {min_tokens}")
    if limit is not None and limit < 0:
        raise IrmscopeError(f"limit must be None or at least 0, got {limit}")
    texts = list(texts)
    if limit is None:
        return _prefixes(texts, tokenizer, n_tokens, min_tokens)
    prefixes: list[str] = []
    start, block = 0, 2 * limit + 64
    while len(prefixes) < limit and start < len(texts):
        prefixes += _prefixes(texts[start : start + block], tokenizer, n_tokens, min_tokens)
        start, block = start + block, 2 * block
    return prefixes[:limit]


def _prefixes(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, n_tokens: int, min_tokens: int
) -> list[str]:
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    candidates = [ids[:n_tokens] for ids in encoded if len(ids) >= min_tokens]
    if not candidates:
        return []
    prefixes = tokenizer.batch_decode(
        candidates, skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    again = tokenizer(prefixes, add_special_tokens=False)["input_ids"]
    return [
        prefix
        for prefix, ids, back in zip(prefixes, candidates, again, strict=True)
        if list(ids) == list(back)
    ]


def review_prompts(
    source: str, split: str, tokenizer: PreTrainedTokenizerBase, n: int, n_tokens: int, seed: int
) -> list[str]:
    """The first ``n`` reviews of ``source``'s ``split`` (in the ``seed`` order) long enough for
    ``n_tokens`` tokens, cut to them: the prompts the commands that tune and evaluate a model complete, read
    the way the pipeline's prompts stage reads them."""
    from irmscope.data.reviews import load_reviews

    texts = list(load_reviews(source, split=split, seed=seed)["text"])
    prompts = truncate_to_prefixes(texts, tokenizer, n_tokens, limit=n)
    if not prompts:
        raise IrmscopeError(f"no {split} text of {source} has {n_tokens} tokens; lower --prefix-tokens")
    return prompts
