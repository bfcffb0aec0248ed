"""Planted lexicons: rewards a pretrained model cannot already know.

A pretrained model knows sentiment, so recovering VADER from its activations does not show that tuning
installed a reward (a read-out of the *untuned* SmolLM2 recovers VADER with Kendall tau about 0.70). A
planted lexicon assigns random values to words that carry no sentiment at all, so the only way an
elicitation method can recover those values from a model is that tuning put them there. The untuned base
model is the control: on it every method should score tau about 0.

The words are the ``n_words`` most frequent words of a review corpus that

* are absent from VADER (VADER rates them neutral),
* are alphabetic, at least three letters, lowercase in the corpus, and not spaCy stop words (so the reward
  cannot be gamed by repeating "the"),
* are a single model token after a space (so a word's value maps onto one next-token choice and onto one
  activation position), and
* are not among the neutral substitutes of the contrastive triples (they must stay neutral there).

Values are drawn uniformly from ``[-max_value, max_value]`` with ``seed`` and rounded to one decimal, like
VADER's ratings. Same corpus, tokenizer and seed → the same lexicon.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from irmscope.data.triples import NEUTRAL_WORDS
from irmscope.errors import IrmscopeError
from irmscope.rewards.lexicon import Lexicon, tokenize

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MIN_LETTERS = 3
#: training reviews whose word frequencies a planted lexicon is drawn from, by default
PLANTED_TEXTS = 5000


def planted_lexicon(
    texts: Iterable[str],
    tokenizer: PreTrainedTokenizerBase,
    n_words: int = 200,
    seed: int = 0,
    max_value: float = 4.0,
) -> Lexicon:
    """Random values in ``[-max_value, max_value]`` for the ``n_words`` most frequent neutral words.

    See the module docstring for which words qualify. Raises :class:`IrmscopeError` when the corpus has fewer
    than ``n_words`` of them.
    """
    if n_words < 2:
        raise IrmscopeError(f"a planted lexicon needs at least 2 words, got n_words={n_words}")
    if not max_value > 0:
        raise IrmscopeError(f"max_value must be positive, got {max_value}")
    from spacy.lang.en.stop_words import STOP_WORDS

    vader = Lexicon.vader()
    excluded = {w.lower() for w in NEUTRAL_WORDS}
    counts: Counter[str] = Counter()
    for tokens in tokenize(texts):
        counts.update(t for t in tokens if len(t) >= MIN_LETTERS and t.isalpha() and t.islower())
    words: list[str] = []
    for word, _ in counts.most_common():
        if word in STOP_WORDS or word in excluded or vader.lookup(word, 0.0) != 0.0 or word in vader:
            continue
        if len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) != 1:
            continue
        words.append(word)
        if len(words) == n_words:
            break
    if len(words) < n_words:
        raise IrmscopeError(
            f"the corpus has only {len(words)} frequent sentiment-neutral single-token words, fewer than "
            f"n_words={n_words}: lower n_words or use a larger corpus"
        )
    rng = random.Random(seed)
    values = [round(rng.uniform(-max_value, max_value), 1) for _ in words]
    return Lexicon(zip(words, values, strict=True), source=f"planted(seed={seed}, n={n_words})")


def planted_lexicon_of_reviews(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    n_words: int,
    seed: int,
    n_texts: int = PLANTED_TEXTS,
    reviews_seed: int | None = None,
) -> Lexicon:
    """:func:`planted_lexicon` on the frequent words of the first ``n_texts`` training reviews of
    ``source`` in the ``reviews_seed`` order (default ``seed``): what ``irmscope planted-lexicon`` writes and
    the pipeline's ``planted-lexicon`` stage draws (with the run's seed for the order and the reward's
    ``planted_seed`` for the values)."""
    from irmscope.data.reviews import load_reviews

    order = seed if reviews_seed is None else reviews_seed
    texts = list(load_reviews(source, split="train", limit=n_texts, seed=order)["text"])
    return planted_lexicon(texts, tokenizer, n_words=n_words, seed=seed)
