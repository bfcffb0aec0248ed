"""Scoring completions on the prompts' kept key-value cache gives what a fresh pass over prompt +
completion gives, for every architecture family, with prompts and completions of different lengths."""

from __future__ import annotations

import numpy as np
import pytest

from irmscope.errors import IrmscopeError
from irmscope.models import load_model
from irmscope.models.accounting import TokenCounts, counted
from irmscope.models.prompt_cache import CachedPrompts
from irmscope.models.reading import completion_statistics

PROMPTS = ["The movie was", "I did not expect this film to be so", "Honestly,"]
SETS = [
    [" really good fun", " long.", " the best thing I saw all year and more"],
    [" bad", " funny and sad at once, with a", " meh"],
]


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_cached_prompts_score_completions_as_a_fresh_pass_does(family):
    lm = load_model(family)
    cached = CachedPrompts(lm, PROMPTS, batch_size=2)  # two batches, each with padding
    for completions in SETS:
        fresh = completion_statistics(lm, None, PROMPTS, completions)["nll"]
        np.testing.assert_allclose(cached.completion_nll(completions), fresh, rtol=1e-5, atol=1e-5)
    # the same set again: the kept caches did not grow with the first reading
    np.testing.assert_allclose(
        cached.completion_nll(SETS[0]), completion_statistics(lm, None, PROMPTS, SETS[0])["nll"], atol=1e-5
    )


def test_cached_prompts_read_each_prompt_token_once():
    lm = load_model("tiny-llama")
    with counted() as reading:
        cached = CachedPrompts(lm, PROMPTS)
    with counted() as scoring:
        cached.completion_nll(SETS[0])
    prompt_tokens = sum(len(lm.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS)
    completion_tokens = sum(len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in SETS[0])
    assert reading.to_dict() == TokenCounts(forward=prompt_tokens).to_dict()
    assert scoring.to_dict() == TokenCounts(forward=completion_tokens).to_dict()


def test_cached_prompts_refuse_what_they_cannot_score():
    lm = load_model("tiny-llama")
    with pytest.raises(IrmscopeError, match="one per prompt"):
        CachedPrompts(lm, PROMPTS).completion_nll(SETS[0][:2])
    with pytest.raises(IrmscopeError, match="no prompts"):
        CachedPrompts(lm, [])
