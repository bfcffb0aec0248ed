"""Contrastive triples (positive, neutral, negative) built by a lexicon rule, without an LLM.

The paper (Appendix E.2, step 4) truncates IMDb texts at their first positive VADER token and asks
GPT-3.5 to swap that token for a negative and a neutral one, e.g. ``["I feel good", "I feel ok",
"I feel bad"]``. The three inputs differ only in their last word, so comparing the model's activations at
the last token isolates how it represents that word's sentiment. We replace the LLM by a deterministic,
documented rule so the dataset can be rebuilt offline, for any lexicon:

1. **Find the positive word.** Each text is split with spaCy's rule-based English tokenizer
   (``spacy.blank("en")``; no model download) and lowercased. The first token whose lexicon value is
   ``>= min_value`` (default 1.0 — on VADER's -4..4 scale that keeps clearly positive words such as
   "good" 1.9 and "great" 3.1 and leaves out lukewarm ones such as "okay" 0.9 or "fine" 0.8) is the
   positive word, provided that it

   * is purely alphabetic (VADER also lists emoticons such as ``:)``);
   * follows a space and at least one earlier token (a word glued to punctuation, at a line start, or with
     no context is skipped), so that it is always the model token ``" word"``;
   * is a single model token in context: tokenizing the prefix plus the word adds exactly one token to the
     prefix's tokens (for byte-level BPE tokenizers that means ``" word"`` is one token);
   * is not negated: none of the three tokens before it is a negator ("not", "n't", "never", ...), the same
     window VADER uses. "I did not like" is not a positive input.

   If the first positive token fails a check we move on to the next one in the same text; a text with none
   yields no triple.
2. **Truncate** the text right after that word, keeping the prefix's original casing and whitespace. That is
   the positive input.
3. **Negative substitute**: among the lexicon's alphabetic words with value ``<= -min_value``, the one whose
   absolute value is closest to the positive word's value (its mirror image: "good" 1.9 → a word near
   -1.9). Ties (VADER has many words per value) are broken by a seeded random draw per triple, which spreads
   the triples over many negative words; a candidate that is not a single token in context is passed over for
   the next closest.
4. **Neutral substitute**: a seeded random pick from :data:`NEUTRAL_WORDS`, common English adjectives that
   are absent from the VADER lexicon (and, at run time, that are absent from or zero in the lexicon given),
   again keeping only a single token in context.
5. Substitutes copy the **capitalisation pattern** of the positive word: "Great" → "Awful", "GREAT" → "AWFUL".

Given the same texts (in the same order), lexicon, tokenizer and seed, the triples are identical. The
sentiment word is always the **last** word, and a single last token, of all three inputs, so downstream code
reads activations at token index -1.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import pandas as pd

from irmscope.errors import IrmscopeError
from irmscope.text import english_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Default threshold: a word is "positive" when its lexicon value is >= this, "negative" when <= its negation.
MIN_VALUE = 1.0

#: Common, descriptive English adjectives with no sentiment: none is in the VADER lexicon (a test checks
#: this), and each is one SmolLM2 token after a space. Evaluative-sounding words ("average", "ordinary",
#: "plain", "simple", "long") are left out on purpose even though VADER does not list them.
NEUTRAL_WORDS: tuple[str, ...] = (
    "different",
    "usual",
    "normal",
    "typical",
    "similar",
    "regular",
    "standard",
    "general",
    "common",
    "specific",
    "physical",
    "visual",
    "technical",
    "formal",
    "modern",
    "recent",
    "local",
    "large",
    "small",
    "medium",
)

#: Negators that make a following positive word not positive (VADER looks 3 tokens back, so do we).
NEGATORS: frozenset[str] = frozenset(
    {
        "not", "n't", "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "without",
        "hardly", "barely", "scarcely", "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "wasnt",
        "arent", "werent", "wont", "wouldnt", "shouldnt", "couldnt", "aint", "nt",
    }
)  # fmt: skip
NEGATION_WINDOW = 3
_FIRST_CHUNK_CHARS = 600
_PROBE_CONTEXT = "It was"


@runtime_checkable
class LexiconLike(Protocol):
    """What the triples rule needs from a lexicon: its words and their values (irmscope's ``Lexicon``)."""

    def words(self) -> Iterable[str]: ...

    def get(self, word: str) -> float | None: ...


@dataclass(frozen=True)
class ContrastiveTriple:
    """Three inputs that differ only in their last word: positive, neutral and negative.

    ``positive``, ``neutral`` and ``negative`` are the texts; ``*_word`` are the last words as they appear
    (with the capitalisation of the source; lexicon keys are their lowercase forms). ``word_start`` is the
    character offset of the last word, the same in all three texts since they share the prefix
    ``positive[:word_start]``. ``source_index`` is the position of the source text in the input.
    """

    positive: str
    neutral: str
    negative: str
    positive_word: str
    neutral_word: str
    negative_word: str
    positive_value: float
    negative_value: float
    word_start: int
    source_index: int

    #: The sentiment word is the last word and a single last token of each text: read activations at -1.
    word_token_index: ClassVar[int] = -1

    @property
    def prefix(self) -> str:
        """The shared context before the sentiment word (ends with a space)."""
        return self.positive[: self.word_start]

    @property
    def texts(self) -> tuple[str, str, str]:
        """``(positive, neutral, negative)``, the order the paper uses."""
        return (self.positive, self.neutral, self.negative)


def build_contrastive_triples(
    texts: Sequence[str],
    lexicon: LexiconLike | Mapping[str, float],
    tokenizer: PreTrainedTokenizerBase,
    *,
    min_value: float = MIN_VALUE,
    seed: int = 0,
    max_triples: int | None = None,
    neutral_words: Sequence[str] = NEUTRAL_WORDS,
    skip_negated: bool = True,
) -> list[ContrastiveTriple]:
    """Build at most one contrastive triple per text by the rule in this module's docstring.

    ``lexicon`` is irmscope's ``Lexicon`` or any ``{word: value}`` mapping (a planted lexicon works the same
    way as VADER: "positive" just means value ``>= min_value``). Texts are used in order; ``max_triples``
    stops early. Raises :class:`IrmscopeError` when the lexicon has no negative or no usable neutral words.
    """
    if max_triples is not None and max_triples < 1:
        raise IrmscopeError(f"max_triples must be a positive number, got {max_triples}")
    triples = iter_contrastive_triples(
        texts, lexicon, tokenizer, min_value=min_value, seed=seed, neutral_words=neutral_words,
        skip_negated=skip_negated,
    )  # fmt: skip
    return list(islice(triples, max_triples))


def iter_contrastive_triples(
    texts: Sequence[str],
    lexicon: LexiconLike | Mapping[str, float],
    tokenizer: PreTrainedTokenizerBase,
    *,
    min_value: float = MIN_VALUE,
    seed: int = 0,
    neutral_words: Sequence[str] = NEUTRAL_WORDS,
    skip_negated: bool = True,
) -> Iterator[ContrastiveTriple]:
    """The triples of :func:`build_contrastive_triples`, each built only when it is taken: a caller that
    keeps the first few that pass a test of its own (:func:`short_contrastive_triples`) parses and
    tokenizes no more texts than it needs. The lexicon is checked at once, before the first triple."""
    if min_value <= 0:
        raise IrmscopeError(
            f"min_value must be positive (it splits positive from negative words), got {min_value}"
        )
    values = _as_mapping(lexicon)
    negatives = sorted(
        ((w, v) for w, v in values.items() if v <= -min_value and w.isalpha()), key=lambda item: item[0]
    )
    if not negatives:
        raise IrmscopeError(f"the lexicon has no alphabetic word with value <= {-min_value}; lower min_value")
    neutrals = [w.lower() for w in neutral_words if w.isalpha() and not values.get(w.lower())]
    if not neutrals:
        raise IrmscopeError(
            "every neutral word is in the lexicon with a nonzero value; pass other neutral_words"
        )
    triple_for = partial(
        _triple_for, values=values, min_value=min_value, tokenize=_Tokenize(tokenizer),
        negatives=_NegativeIndex(negatives), neutrals=neutrals, rng=random.Random(seed),
        word_tokenizer=english_tokenizer(), skip_negated=skip_negated,
    )  # fmt: skip
    built = (triple_for(text, index) for index, text in enumerate(texts))
    return (triple for triple in built if triple is not None)


def short_contrastive_triples(
    texts: Sequence[str],
    lexicon: LexiconLike | Mapping[str, float],
    tokenizer: PreTrainedTokenizerBase,
    n: int,
    seed: int = 0,
    max_tokens: int = 64,
) -> list[ContrastiveTriple]:
    """The first ``n`` triples of :func:`build_contrastive_triples` whose positive text is at most
    ``max_tokens`` tokens: contrast pairs for a whole forward pass each (CCS, activation patching), where
    a long review prefix would only cost time."""
    triples = iter_contrastive_triples(texts, lexicon, tokenizer, seed=seed)
    short = (
        t for t in triples if len(tokenizer(t.positive, add_special_tokens=False)["input_ids"]) <= max_tokens
    )
    return list(islice(short, n))


def triples_to_frame(triples: Sequence[ContrastiveTriple]) -> pd.DataFrame:
    """One row per triple with every field, for saving next to an experiment (parquet, csv)."""
    columns = list(ContrastiveTriple.__dataclass_fields__)
    return pd.DataFrame([asdict(t) for t in triples], columns=columns)


def match_case(template: str, word: str) -> str:
    """Write ``word`` with ``template``'s capitalisation: ALL CAPS, Title case, or lowercase."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:].lower()
    return word.lower()


# --------------------------------------------------------------------------------------------- internals


def _as_mapping(lexicon: LexiconLike | Mapping[str, float]) -> dict[str, float]:
    """``{lowercase word: value}`` from a ``Lexicon`` (``words()``/``get()``) or a plain mapping.

    Lookups are case-insensitive, as for the lexicon reward: of two entries that differ only in case, the
    all-lowercase one wins.
    """
    if isinstance(lexicon, Mapping):
        items = lexicon.items()
    elif isinstance(lexicon, LexiconLike):
        items = ((w, lexicon.get(w)) for w in lexicon.words())
    else:
        raise IrmscopeError(f"expected a Lexicon or a {{word: value}} mapping, got {type(lexicon).__name__}")
    folded: dict[str, float] = {}
    exact: set[str] = set()  # keys whose value came from an all-lowercase entry, which wins (as in rewards)
    for word, value in items:
        if value is None:
            continue
        key = str(word).lower()
        if key in exact and key != word:
            continue
        folded[key] = float(value)
        if key == word:
            exact.add(key)
    return folded


class _Tokenize:
    """Memoised ``text -> token ids`` without special tokens, and the in-context single-token test."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[str, list[int]] = {}
        self._word_cache: dict[str, bool] = {}

    def ids(self, text: str) -> list[int]:
        if text not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[text] = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._cache[text]

    def one_token_after(self, context: str, word: str) -> bool:
        """Whether ``context + " " + word`` is ``context``'s tokens plus exactly one token.

        ``context`` is the prefix without its final space; the space goes with the word, as in ``" good"``.
        A cheap check in a short fixed context runs first and is cached per word, so long review prefixes are
        tokenized only for words that can pass.
        """
        if not self._single_token(word):
            return False
        before = self.ids(context)
        after = self.ids(context + " " + word)
        return len(after) == len(before) + 1 and after[: len(before)] == before

    def maybe_one_token(self, word: str) -> bool:
        """The cached short-context check alone: False means ``word`` is never one token after a space."""
        return self._single_token(word)

    def _single_token(self, word: str) -> bool:
        if word not in self._word_cache:
            before = self.ids(_PROBE_CONTEXT)
            after = list(self._tokenizer(_PROBE_CONTEXT + " " + word, add_special_tokens=False)["input_ids"])
            self._word_cache[word] = len(after) == len(before) + 1 and after[: len(before)] == before
        return self._word_cache[word]


class _NegativeIndex:
    """Negative words grouped by how far their absolute value is from a given positive value."""

    def __init__(self, negatives: list[tuple[str, float]]) -> None:
        self._negatives = negatives
        self._groups: dict[float, list[list[tuple[str, float]]]] = {}

    def groups(self, positive_value: float) -> list[list[tuple[str, float]]]:
        """Tie groups, closest first; words within a group are in alphabetical order."""
        if positive_value not in self._groups:
            grouped: dict[float, list[tuple[str, float]]] = {}
            for word, value in self._negatives:
                grouped.setdefault(round(abs(abs(value) - positive_value), 9), []).append((word, value))
            self._groups[positive_value] = [grouped[d] for d in sorted(grouped)]
        return self._groups[positive_value]


def _negated(doc: Any, position: int) -> bool:
    return any(tok.lower_ in NEGATORS for tok in doc[max(0, position - NEGATION_WINDOW) : position])


def _chunks(text: str, first: int = _FIRST_CHUNK_CHARS) -> Iterator[str]:
    """The text's head (cut at a space after ``first`` characters), then the whole text if it is longer.

    spaCy tokenizes each space-separated span on its own, so a head cut at a space tokenizes exactly like the
    start of the full text; since most reviews have a positive word early, this skips tokenizing long tails.
    """
    cut = text.find(" ", first)
    if cut != -1:
        yield text[:cut]
    yield text


def _triple_for(
    text: str,
    index: int,
    *,
    values: dict[str, float],
    min_value: float,
    tokenize: _Tokenize,
    negatives: _NegativeIndex,
    neutrals: list[str],
    rng: random.Random,
    word_tokenizer: Any,
    skip_negated: bool,
) -> ContrastiveTriple | None:
    """The triple for one text, or None when no positive word passes every check."""
    for chunk in _chunks(text):
        doc = word_tokenizer(chunk)
        for position, token in enumerate(doc):
            value = values.get(token.lower_)
            if value is None or value < min_value or not token.text.isalpha():
                continue
            start = token.idx
            if position == 0 or start == 0 or text[start - 1] != " ":
                continue
            if skip_negated and _negated(doc, position):
                continue
            context = text[: start - 1]
            word = token.text
            if not context.strip() or not tokenize.one_token_after(context, word):
                continue
            negative = _pick_negative(context, word, value, negatives, tokenize, rng)
            neutral = _pick_neutral(context, word, neutrals, tokenize, rng)
            if negative is None or neutral is None:
                continue
            negative_word, negative_value = negative
            prefix = text[:start]
            return ContrastiveTriple(
                positive=prefix + word,
                neutral=prefix + neutral,
                negative=prefix + negative_word,
                positive_word=word,
                neutral_word=neutral,
                negative_word=negative_word,
                positive_value=value,
                negative_value=negative_value,
                word_start=start,
                source_index=index,
            )
    return None


def _pick_negative(
    context: str, word: str, value: float, negatives: _NegativeIndex, tokenize: _Tokenize, rng: random.Random
) -> tuple[str, float] | None:
    """The closest mirror-image negative word that is one token here; ties broken by ``rng``."""
    for group in negatives.groups(value):
        order = [(match_case(word, c), v) for c, v in group]
        order = [(c, v) for c, v in order if tokenize.maybe_one_token(c)]
        rng.shuffle(order)
        for cased, candidate_value in order:
            if tokenize.one_token_after(context, cased):
                return cased, candidate_value
    return None


def _pick_neutral(
    context: str, word: str, neutrals: list[str], tokenize: _Tokenize, rng: random.Random
) -> str | None:
    """A seeded random neutral word that is one token here."""
    order = list(neutrals)
    rng.shuffle(order)
    for candidate in order:
        cased = match_case(word, candidate)
        if tokenize.one_token_after(context, cased):
            return cased
    return None
