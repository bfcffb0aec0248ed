"""The token-level implicit reward: how much tuning raised each word's probability.

Under KL-regularised RL with coefficient β the optimal policy is ``π*(a|s) ∝ π_ref(a|s)·exp(Q(s,a)/β)``, so
``β·log(π*(w|s)/π_ref(w|s)) = Q(s, w) − V(s)``: the log-ratio of the tuned to the reference model is the
reward of emitting ``w`` (plus the value of what follows) up to a baseline that depends on the context only
(Rafailov et al.'s DPO identity, applied per token). For a lexicon reward, which pays each word its value,
the mean log-ratio of a word over a fixed set of contexts ranks words by their implicit reward: the
context baselines are shared by all words and cancel from the ranking. The contexts are every position of
a set of texts (one forward pass per text gives them all), so a few hundred texts give tens of thousands.

No fitting is involved, so every word is held out. The untuned base model is its own reference, so for it
this estimate is zero everywhere (no ranking at all, reported as NaN); the meaningful control is a model
tuned against a *different* reward, which has drifted from the base as much but towards other words.
"""

from __future__ import annotations

from collections.abc import Sequence

from irmscope.elicit.continuations import next_token_log_probs, word_token_ids
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel


def policy_shift_lexicon(
    tuned: LoadedModel,
    reference: LoadedModel,
    words: Sequence[str],
    texts: Sequence[str],
    beta: float = 1.0,
    max_length: int = 64,
) -> dict[str, float]:
    """``β · mean over contexts c of log π_tuned(w|c) − log π_ref(w|c)`` for each single-token word ``w``,
    with every prefix of every text (up to ``max_length`` tokens) as a context.

    Words that are not one token after a space are dropped. Both models must share a tokenizer.
    """
    ids = word_token_ids(tuned.tokenizer, words)
    if not ids:
        raise IrmscopeError("none of the words is a single token after a space for this model")
    if word_token_ids(reference.tokenizer, list(ids)) != ids:
        raise IrmscopeError(
            "the tuned and reference models tokenize words differently; use the same tokenizer"
        )
    token_ids = list(ids.values())
    tuned_lp = next_token_log_probs(tuned, texts, token_ids, max_length=max_length)
    ref_lp = next_token_log_probs(reference, texts, token_ids, max_length=max_length)
    shift = beta * (tuned_lp - ref_lp).double().mean(dim=0)
    return dict(zip(ids, shift.tolist(), strict=True))
