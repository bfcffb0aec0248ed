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
from tqdm.auto import tqdm

from irmscope.config import ElicitSection
from irmscope.data.triples import build_contrastive_triples
from irmscope.elicit.agreement import lexicon_agreement, lexicon_gap
from irmscope.elicit.lexicon_study import STUDY_STEPS, StudyInputs, evaluation_words, lexicon_study
from irmscope.elicit.policy_shift import ShiftLevels
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel
from irmscope.models.precision import resolve_precision
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
    shift_levels: ShiftLevels,
    settings: ElicitSection,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """The IRM regression (all variants and controls) on ``tuned`` and ``base``, plus the policy shift,
    with a progress bar over their steps when ``progress`` (2 to 3 minutes on a 2-core CPU at the demo's
    size).

    ``texts`` are reviews to cut contrastive triples from; the policy-shift estimates come from
    ``shift_levels``, both models' levels over every position of a set of texts (read once, e.g. by the
    pipeline's read-samples stage, or by :func:`~irmscope.elicit.policy_shift.shift_levels`).
    ``settings`` (the config's ``elicit`` section) sizes the study.
    """
    triples = build_contrastive_triples(
        texts, lexicon, base.tokenizer, seed=seed, max_triples=settings.n_triples
    )
    if len(triples) < 2:
        raise IrmscopeError(
            f"only {len(triples)} contrastive triples could be built from {len(texts)} texts; give more "
            "texts or a lexicon with more words that occur in them"
        )
    truth = {w.lower(): v for w, v in lexicon.items()}
    contexts = scoring_contexts(texts, settings.n_contexts, seed)
    inputs = StudyInputs(
        truth, triples, contexts, settings.held_out_fraction, settings.max_words, settings.max_context_tokens,
        seed, resolve_precision(settings.precision, next(tuned.model.parameters()).device),
    )  # fmt: skip
    subjects = {"tuned": (tuned, tuned_saes), "base": (base, base_saes)}
    with tqdm(
        total=len(subjects) * STUDY_STEPS + 1, desc="eliciting", unit="step", disable=not progress
    ) as bar:
        studies = {}
        for label, (lm, saes) in subjects.items():
            bar.set_description(f"eliciting ({label} model)")
            studies[label] = lexicon_study(lm, saes, inputs, bar=bar)
        bar.set_description("eliciting")
        bar.set_postfix_str("policy shift, tuned-minus-base gaps")
        shift, shift_gap = _policy_shift_study(tuned, inputs, shift_levels)
        irm_gap = _irm_gap(studies, inputs.truth, seed)
        bar.update()
    return {**studies, "gap": {"irm": irm_gap, "policy_shift": shift_gap}, "policy_shift": shift}


def _irm_gap(studies: Mapping[str, Any], truth: Mapping[str, float], seed: int) -> dict[str, Any]:
    """``tau(tuned) - tau(base)`` for every regression variant and control, paired over the words: only
    this gap is evidence that tuning installed the reward."""
    return {
        variant: {
            control: lexicon_gap(
                values, studies["base"]["elicited"][variant][control], truth, sorted(values), seed
            )
            for control, values in controls.items()
        }
        for variant, controls in studies["tuned"]["elicited"].items()
    }


def _policy_shift_study(
    tuned: LoadedModel, inputs: StudyInputs, levels: ShiftLevels
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token-level implicit reward scored against the lexicon, and its tuned-minus-base gap.

    The policy shift fits nothing, so every lexicon word is held out from it: it is scored on the
    regression's held-out words (to compare) and on up to ``max_words`` of all words (more words, tighter
    intervals). The base model's shift is zero by construction; its control is its own level alone."""
    truth, seed = inputs.truth, inputs.seed
    on = {
        "held_out_words": evaluation_words(truth, tuned, inputs.held_out_fraction, seed, inputs.max_words),
        "every_word": evaluation_words(truth, tuned, 1.0, seed, inputs.max_words),
    }
    estimates = levels.shift(tuned.tokenizer, sorted(set(on["held_out_words"]) | set(on["every_word"])))

    def scored(values: dict[str, dict[str, float]]) -> dict[str, Any]:
        return {
            where: {name: lexicon_agreement(v, truth, words, seed=seed) for name, v in values.items()}
            for where, words in on.items()
        }

    gap = {
        where: {
            name: lexicon_gap(estimates.shift[name], estimates.reference_level[name], truth, words, seed)
            for name in estimates.shift
        }
        for where, words in on.items()
    }
    shift = {
        **scored(estimates.shift),
        "base_level": scored(estimates.reference_level),
        "n_texts": levels.n_texts,
        "n_contexts": levels.n_contexts,
        "values": estimates.shift,
    }
    return shift, gap
