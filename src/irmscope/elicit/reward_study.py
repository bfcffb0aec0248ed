"""Elicit a lexicon reward from a tuned model and from its untuned base, side by side.

This is what the pipeline's ``elicit`` stage runs: the contrastive triples are built once from the
lexicon, then :func:`~irmscope.elicit.lexicon_study.lexicon_study` runs on the tuned model and on the base
model with the same triples, contexts and held-out words, and the token-level implicit reward
(:mod:`~irmscope.elicit.policy_shift`) is scored on the same words and, since it fits nothing, on a seeded
sample of all lexicon words.

Only the gap between the two models is evidence that tuning installed the reward, so the study reports
``tau(tuned) - tau(base)`` for every method and control with a paired bootstrap over words
(:func:`~irmscope.elicit.agreement.lexicon_gap`); for the policy shift the base model's number is its own
level (its shift is zero by construction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from irmscope.data.triples import build_contrastive_triples
from irmscope.elicit.agreement import lexicon_agreement, lexicon_gap
from irmscope.elicit.lexicon_study import evaluation_words, lexicon_study
from irmscope.elicit.policy_shift import policy_shift
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel
from irmscope.sae.model import SAE


def scoring_contexts(texts: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` contexts to place each evaluated word after: the opening 8-30 words (a seeded length) of
    reviews taken from the end of ``texts``, away from the ones triples are cut from.

    They must not depend on the lexicon. Triple prefixes did: each ends where a rewarded word really
    occurred, so a held-out word whose own slot was among them was scored where it fits, and a word
    that fits the slots (a verb after a verb slot) scored higher, which leaked planted values into the
    untuned model's ranking."""
    rng = np.random.default_rng(seed)
    contexts = []
    for text in reversed(texts):
        words = text.split()
        if len(words) >= 9:
            contexts.append(" ".join(words[: int(rng.integers(8, min(30, len(words) - 1) + 1))]))
        if len(contexts) == n:
            break
    if len(contexts) < n:
        raise IrmscopeError(f"only {len(contexts)} of {n} reviews have 9 or more words to cut a context from")
    return contexts


def elicit_lexicon_reward(
    tuned: LoadedModel,
    base: LoadedModel,
    *,
    tuned_saes: Mapping[str, SAE],
    base_saes: Mapping[str, SAE],
    lexicon: Mapping[str, float],
    texts: Sequence[str],
    shift_texts: Sequence[str],
    n_triples: int = 600,
    n_contexts: int = 8,
    max_words: int = 600,
    held_out_fraction: float = 0.3,
    max_context_tokens: int = 48,
    seed: int = 0,
) -> dict[str, Any]:
    """The IRM regression (all variants and controls) on ``tuned`` and ``base``, plus the policy shift.

    ``texts`` are reviews to cut contrastive triples from; the policy-shift estimates average over every
    position of ``shift_texts``.
    """
    triples = build_contrastive_triples(texts, lexicon, base.tokenizer, seed=seed, max_triples=n_triples)
    if len(triples) < 2:
        raise IrmscopeError(
            f"only {len(triples)} contrastive triples could be built from {len(texts)} texts; give more "
            "texts or a lexicon with more words that occur in them"
        )
    contexts = scoring_contexts(texts, n_contexts, seed)
    common = dict(
        lexicon=lexicon,
        triples=triples,
        contexts=contexts,
        held_out_fraction=held_out_fraction,
        max_words=max_words,
        seed=seed,
    )
    truth = {w.lower(): v for w, v in lexicon.items()}
    words = evaluation_words(truth, tuned, held_out_fraction, seed, max_words)
    # the policy shift fits nothing, so every lexicon word is held out from it: scored on the regression's
    # held-out words (to compare) and on up to max_words of all words (more words, tighter intervals)
    every_word = evaluation_words(truth, tuned, 1.0, seed, max_words)
    estimates = policy_shift(tuned, base, sorted(set(words) | set(every_word)), shift_texts)

    def scored(values: dict[str, dict[str, float]], on: list[str]) -> dict[str, Any]:
        return {name: lexicon_agreement(v, truth, on, seed=seed) for name, v in values.items()}

    def shift_gap(on: list[str]) -> dict[str, Any]:
        return {
            name: lexicon_gap(estimates.shift[name], estimates.reference_level[name], truth, on, seed)
            for name in estimates.shift
        }

    studies = {
        "tuned": lexicon_study(tuned, tuned_saes, **common),
        "base": lexicon_study(base, base_saes, **common),
    }
    irm_gap = {
        variant: {
            control: lexicon_gap(
                values, studies["base"]["elicited"][variant][control], truth, sorted(values), seed
            )
            for control, values in controls.items()
        }
        for variant, controls in studies["tuned"]["elicited"].items()
    }
    return {
        **studies,
        "gap": {
            "irm": irm_gap,
            "policy_shift": {"held_out_words": shift_gap(words), "every_word": shift_gap(every_word)},
        },
        "policy_shift": {
            "held_out_words": scored(estimates.shift, words),
            "every_word": scored(estimates.shift, every_word),
            # the base model's shift is zero by construction; its control is its own level alone
            "base_level": {
                "held_out_words": scored(estimates.reference_level, words),
                "every_word": scored(estimates.reference_level, every_word),
            },
            "n_texts": len(shift_texts),
            "values": estimates.shift,
        },
    }
