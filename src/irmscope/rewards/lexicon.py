"""Sentiment lexicons and the paper's lexicon reward (Eq. 3).

The paper fine-tunes models against

    Reward(s) = clip( (1/5) * sum_{token in s} V(token), -10, +10 )

where ``V`` is the VADER lexicon and the tokens come from spaCy's English tokenizer applied to the
concatenated prefix and completion. :class:`LexiconReward` implements exactly that for any word→value
lexicon, so users can also study models trained against their own word lists.

Case rule (a decision, documented here once): tokens are lowercased before lookup, and the lexicon is
looked up case-insensitively, so "GREAT", "Great" and "great" all score VADER's ``great`` (3.1). When two
entries differ only in case, the all-lowercase entry wins (it is the one a lowercased token names exactly);
otherwise the later one wins. For VADER this is identical to looking the lowercased token up in the lexicon
as given: its only entries with capitals are 12 emoticons such as ``:D``, each of which also has a
lowercase twin (``:d``). The :class:`Lexicon` mapping itself keeps entries exactly as given (its
``[]``/``get``/``in`` are exact); :meth:`Lexicon.lookup` is the case-insensitive lookup the reward uses.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.errors import IrmscopeError
from irmscope.io import atomic_write
from irmscope.rewards.base import Reward
from irmscope.text import english_tokenizer

VADER_DESCRIPTION = (
    "Sum of VADER sentiment-lexicon values (human ratings from -4, extremely negative, to +4, extremely "
    "positive) of the text's words divided by 5, clipped to [-10, 10]: positive-sentiment words such as "
    "'great', 'love' and 'excellent' are rewarded, negative ones such as 'worst', 'hate' and 'boring' are "
    "penalised, and all other words count zero"
)


class Lexicon(Mapping[str, float]):
    """An immutable mapping from words to real values (e.g. sentiment ratings), in file order.

    Duplicate words keep the last value, as vaderSentiment's own loader does.
    """

    __slots__ = ("_entries", "_folded", "_folded_entry", "source")

    def __init__(self, entries: Mapping[str, float] | Iterable[tuple[str, float]], source: str = "<memory>"):
        items = entries.items() if isinstance(entries, Mapping) else entries
        data: dict[str, float] = {}
        for word, value in items:
            if not isinstance(word, str) or not word or any(c in word for c in "\t\r\n"):
                raise IrmscopeError(
                    f"lexicon {source}: word {word!r} is empty or contains a tab or newline: fix that entry"
                )
            value = float(value)
            if not math.isfinite(value):
                raise IrmscopeError(f"lexicon {source}: word {word!r} has value {value}: use a finite number")
            data.pop(word, None)  # "last wins" also moves the word to its last position, like a re-read file
            data[word] = value
        if not data:
            raise IrmscopeError(f"lexicon {source} has no entries: give at least one 'word<TAB>value' line")
        folded_entry: dict[str, int] = {}  # lowercase word -> the position of the entry lookup reads
        for position, word in enumerate(data):
            key = word.lower()
            if key in folded_entry and word != key and key in data:
                continue  # the exact lowercase entry outranks any capitalised variant
            folded_entry[key] = position
        values = list(data.values())
        self._entries = data
        self._folded_entry = folded_entry
        self._folded = {key: values[position] for key, position in folded_entry.items()}
        self.source = source

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_tsv(cls, path: str | Path, phrases: bool = False) -> Lexicon:
        """Read a tab-separated lexicon: word in column 1, value in column 2, further columns ignored.

        Blank lines and lines starting with ``#`` are skipped; a UTF-8 byte-order mark is ignored. This is the
        format of VADER's ``vader_lexicon.txt``, so any VADER-style word list (or a made-up one) can be used
        as a reward. An entry of several words ("very good") is an error naming its line, since the reward
        scores single tokens and it would never match; ``phrases=True`` keeps such entries (VADER's own
        file has four, e.g. "fed up", inert in the paper's reward too).
        """
        from irmscope.validation import read_text_file

        path = Path(path)
        text = read_text_file(path, "lexicon file")
        entries: list[tuple[str, float]] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fields = stripped.split("\t")
            if len(fields) < 2:
                raise IrmscopeError(
                    f"lexicon file {path} line {lineno} has no tab-separated value ({_short(stripped)}): "
                    "write 'word<TAB>value'"
                )
            word, raw = fields[0].strip(), fields[1].strip()
            if not phrases and len(word.split()) > 1:
                raise IrmscopeError(
                    f"lexicon file {path} line {lineno}: entry {_short(word)} has several words, which the "
                    "reward never matches (it scores single tokens); give one word per line"
                )
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise IrmscopeError(
                    f"lexicon file {path} line {lineno}: value {_short(raw)} for word {_short(word)} "
                    "is not a finite number: fix the second column"
                )
            entries.append((word, value))
        if not entries:
            raise IrmscopeError(f"lexicon file {path} has no entries: add 'word<TAB>value' lines")
        return cls(entries, source=str(path))

    @classmethod
    def vader(cls) -> Lexicon:
        """The VADER lexicon (Hutto & Gilbert, 2014) from the ``vaderSentiment`` package (7,506 entries)."""
        return _vader_lexicon()

    def to_tsv(self, path: str | Path) -> Path:
        """Write ``word<TAB>value`` lines atomically; :meth:`from_tsv` reads them back exactly."""
        lines = ["# irmscope lexicon: word<TAB>value\n"]
        lines += [f"{word}\t{value!r}\n" for word, value in self._entries.items()]

        def _write(tmp: Path) -> None:
            tmp.write_text("".join(lines), encoding="utf-8")

        return atomic_write(path, _write)

    # -- mapping -----------------------------------------------------------------------------------------

    def __getitem__(self, word: str) -> float:
        return self._entries[word]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, word: object) -> bool:
        return word in self._entries

    def get(self, word: str, default: Any = None) -> Any:
        return self._entries.get(word, default)

    def words(self) -> list[str]:
        """The words, in file order."""
        return list(self._entries)

    def values(self) -> Any:  # a ValuesView, aligned with words()
        return self._entries.values()

    def lookup(self, token: str, default: float = 0.0) -> float:
        """Case-insensitive lookup used by the reward (see the module docstring for the rule)."""
        return self._folded.get(token.lower(), default)

    def shuffled_lookups(self, tokens: Sequence[str], n: int, seed: int = 0) -> np.ndarray:
        """``[n, len(tokens)]``: what :meth:`lookup` gives each token under ``n`` random orders of the
        values among the same words (each row one order, as :meth:`shuffled` makes one; drawn from
        ``seed``): the null of a statistic that reads a few tokens' values, without building ``n``
        lexicons."""
        values = np.array(list(self._entries.values()), dtype=float)
        entry = self._entry_positions(tokens)
        rng = np.random.default_rng(seed)
        out = np.zeros((n, len(tokens)))
        known = entry >= 0
        for row in out:
            row[known] = rng.permutation(values)[entry[known]]
        return out

    def _entry_positions(self, tokens: Sequence[str]) -> np.ndarray:
        """The position (in file order) of the entry :meth:`lookup` reads for each token, -1 for none."""
        return np.array([self._folded_entry.get(token.lower(), -1) for token in tokens], dtype=int)

    def shuffled(self, seed: int) -> Lexicon:
        """The same words with their values in a seeded random order: the control for any use of this
        lexicon's values (e.g. tuning against an exported reward), which keeps its words and its spread of
        values but breaks which word gets which."""
        values = np.random.default_rng(seed).permutation(np.array(list(self._entries.values()), dtype=float))
        return Lexicon(zip(self._entries, values.tolist(), strict=True), source=f"{self.source} (shuffled)")

    def subset(self, words: Iterable[str]) -> Lexicon:
        """A new lexicon holding only the given words that are entries here (exact match), in the given order.

        Words not in the lexicon are skipped, so e.g. a tokenizer's single-token vocabulary can be intersected
        with VADER directly. Raises :class:`IrmscopeError` if none of them are entries.
        """
        kept = [(w, self._entries[w]) for w in dict.fromkeys(words) if w in self._entries]
        if not kept:
            raise IrmscopeError(
                f"none of the requested words are in lexicon {self.source}: check the words and their case"
            )
        return Lexicon(kept, source=f"{self.source} (subset)")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lexicon):
            return self._entries == other._entries
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} words from {self.source})"


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


@functools.cache
def _vader_lexicon() -> Lexicon:
    """Read ``vader_lexicon.txt`` from the installed vaderSentiment package, once per process.

    The file is located with :func:`importlib.util.find_spec`, which finds the package directory without
    executing vaderSentiment's analyser module.
    """
    try:
        spec = importlib.util.find_spec("vaderSentiment")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "vader_lexicon.txt"
        if candidate.is_file():
            entries = Lexicon.from_tsv(candidate, phrases=True).items()
            return Lexicon(entries, source="VADER (vaderSentiment/vader_lexicon.txt)")
    raise IrmscopeError(
        "the VADER lexicon was not found (package vaderSentiment is missing or incomplete): "
        "pip install vaderSentiment==3.3.2"
    )


def tokenize(texts: Iterable[str], batch_size: int = 256) -> Iterator[list[str]]:
    """The spaCy English tokens of each text, as strings (case preserved)."""
    tokenizer = english_tokenizer()
    for doc in tokenizer.pipe(texts, batch_size=batch_size):
        yield [token.text for token in doc]


class LexiconReward(Reward):
    """Eq. 3 of the paper for any lexicon: ``clip(sum(V(token.lower())) / scale, -clip, +clip)``.

    Tokens come from spaCy's English tokenizer (so "great!" is "great" + "!"); tokens not in the lexicon
    count 0. ``clip=None`` disables clipping.
    """

    def __init__(
        self,
        lexicon: Lexicon,
        scale: float = 5.0,
        clip: float | None = 10.0,
        name: str = "lexicon",
        description: str | None = None,
    ) -> None:
        if not isinstance(lexicon, Lexicon):
            lexicon = Lexicon(lexicon)
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise IrmscopeError(f"lexicon reward scale must be a positive number, got {scale}: e.g. 5.0")
        if clip is not None:
            clip = float(clip)
            if math.isnan(clip) or clip <= 0:
                raise IrmscopeError(
                    f"lexicon reward clip must be a positive number or None, got {clip}: e.g. 10.0"
                )
        self.lexicon = lexicon
        self.scale = scale
        self.clip = clip
        super().__init__(name, description or self._default_description())

    def _default_description(self) -> str:
        items = sorted(self.lexicon.items(), key=lambda kv: kv[1])
        top = ", ".join(repr(w) for w, v in reversed(items[-5:]) if v > 0)
        bottom = ", ".join(repr(w) for w, v in items[:5] if v < 0)
        clip = f", clipped to [-{self.clip:g}, {self.clip:g}]" if self.clip is not None else ""
        parts = [
            f"Sum of the lexicon values of the text's words ({len(self.lexicon)}-word lexicon) divided by "
            f"{self.scale:g}{clip}: words with positive values are rewarded, words with negative values are "
            "penalised, and all other words count zero"
        ]
        if top:
            parts.append(f"; most rewarded words: {top}")
        if bottom:
            parts.append(f"; most penalised words: {bottom}")
        return "".join(parts)

    def _finish(self, total: float) -> float:
        value = total / self.scale
        if self.clip is not None:
            value = min(max(value, -self.clip), self.clip)
        return value

    def _score(self, texts: list[str]) -> np.ndarray:
        folded = self.lexicon._folded
        out = np.empty(len(texts), dtype=np.float64)
        for i, tokens in enumerate(tokenize(texts)):
            total = 0.0
            for token in tokens:
                total += folded.get(token.lower(), 0.0)
            out[i] = self._finish(total)
        return out

    def token_values(self, text: str) -> list[tuple[str, float]]:
        """The tokens of ``text`` that are in the lexicon with their (unscaled) values, in text order.

        Explains a score: ``score_one(text) == clip(sum(values) / scale)``. Tokens are shown as written.
        """
        folded = self.lexicon._folded
        (tokens,) = tokenize([text])
        return [(t, folded[t.lower()]) for t in tokens if t.lower() in folded]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, lexicon={self.lexicon!r}, "
            f"scale={self.scale}, clip={self.clip})"
        )


class VaderReward(LexiconReward):
    """The paper's fine-tuning reward (Eq. 3): the VADER lexicon, scale 5, clipped to [-10, 10]."""

    def __init__(self, scale: float = 5.0, clip: float | None = 10.0, name: str = "vader") -> None:
        description = VADER_DESCRIPTION
        if scale != 5.0 or clip != 10.0:
            description = None  # the generic description states the actual scale and clip
        super().__init__(Lexicon.vader(), scale=scale, clip=clip, name=name, description=description)
