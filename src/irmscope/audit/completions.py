"""What the two models actually wrote: where the change in word counts comes from, and reward-hacking signs.

The logit shifts say what tuning made more likely; the sampled completions say what it made the model
*do*. Each prompt is completed once by each model (the same prompts and seed), so every comparison here is
paired per prompt and its interval resamples prompts.

* **Share of the change**: ``Δcount_w`` is how many more times the tuned completions hold word ``w`` than
  the base completions; its share is ``Δcount_w / Σ_v |Δcount_v|``. A reward that a policy games with a few
  words puts most of the change on them.
* **Repetition**: distinct word uni-/bigrams per completion and pooled, and the longest run of one word
  (``love love love``), since a lexicon reward pays every repeat.
* **Length and vocabulary**: words and characters per completion, and the number of distinct words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from irmscope.elicit.agreement import word_resamples
from irmscope.stats import bootstrap_ci
from irmscope.tune.evaluate import distinct_bigram_fraction

_LETTERS = re.compile(r"[A-Za-z]+")


def completion_words(text: str) -> list[str]:
    """The words of letters in ``text``, case kept (vocabulary words are case-sensitive tokens)."""
    return _LETTERS.findall(text)


def _distinct(words: list[str], n: int) -> float:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def longest_run(words: list[str]) -> int:
    """The longest run of one word repeated back to back (case-insensitive)."""
    best = run = 0
    previous = None
    for word in (w.lower() for w in words):
        run = run + 1 if word == previous else 1
        previous = word
        best = max(best, run)
    return best


def _paired(base: np.ndarray, tuned: np.ndarray, seed: int) -> dict[str, Any]:
    return {
        "base": float(base.mean()),
        "tuned": float(tuned.mean()),
        "difference": bootstrap_ci(tuned - base, seed=seed).as_dict(),
    }


def completion_changes(
    base_completions: Sequence[str],
    tuned_completions: Sequence[str],
    *,
    seed: int = 0,
    top: int = 15,
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """The count changes, repetition, length and vocabulary of the two models' completions (see the module
    docstring). ``counts`` holds every word's base and tuned totals, for other tables to look up. The shown
    words' count changes have bootstrap intervals over prompts with ``n_resamples`` resamples (the audit's
    word intervals); the completion-level differences, :func:`~irmscope.stats.bootstrap_ci`'s 2000."""
    base_words = [completion_words(c) for c in base_completions]
    tuned_words = [completion_words(c) for c in tuned_completions]
    base_count = Counter(w for words in base_words for w in words)
    tuned_count = Counter(w for words in tuned_words for w in words)
    delta = {w: tuned_count[w] - base_count[w] for w in base_count | tuned_count}
    total = sum(abs(d) for d in delta.values())
    ranked = sorted((w for w in delta if delta[w]), key=lambda w: (-delta[w], w))
    shown = ranked[:top] + [w for w in reversed(ranked[top:]) if delta[w] < 0][:top]
    # per-prompt differences of the shown words, resampled over prompts together
    pairs = [(Counter(b), Counter(t)) for b, t in zip(base_words, tuned_words, strict=True)]
    per_prompt = np.array([[t[w] - b[w] for w in shown] for b, t in pairs], dtype=np.float64)
    per_prompt = per_prompt.reshape(len(pairs), len(shown))
    means = word_resamples(len(base_words), n_resamples, seed) / len(base_words) @ per_prompt
    low, high = np.percentile(means, [2.5, 97.5], axis=0) if shown else ([], [])

    def row(i: int, word: str) -> dict[str, Any]:
        return {
            "word": word,
            "base_count": base_count[word],
            "tuned_count": tuned_count[word],
            "delta_per_completion": {
                "value": float(per_prompt[:, i].mean()),
                "low": float(low[i]),
                "high": float(high[i]),
            },
            "share": delta[word] / total,
        }

    rows = [row(i, w) for i, w in enumerate(shown)]

    def both(measure) -> dict[str, Any]:
        base = np.array([measure(words) for words in base_words], dtype=np.float64)
        return _paired(base, np.array([measure(words) for words in tuned_words], dtype=np.float64), seed)

    return {
        "n_completions": len(base_completions),
        "total_abs_change": total,
        "top_share": sum(abs(delta[w]) for w in ranked[:10]) / total if total else 0.0,
        "gained": [r for r in rows if r["share"] > 0],
        "lost": [r for r in rows if r["share"] < 0],
        "repetition": {
            "distinct_unigrams": both(lambda w: _distinct(w, 1)),
            "distinct_bigrams": both(lambda w: _distinct(w, 2)),
            "longest_run": both(longest_run),
            "pooled_distinct_bigrams": {
                "base": distinct_bigram_fraction(base_completions),
                "tuned": distinct_bigram_fraction(tuned_completions),
            },
        },
        "length": {
            "words": both(len),
            "characters": _paired(
                np.array([len(c) for c in base_completions], dtype=np.float64),
                np.array([len(c) for c in tuned_completions], dtype=np.float64),
                seed,
            ),
        },
        "vocabulary": {"base": len(base_count), "tuned": len(tuned_count)},
        "counts": {"base": dict(base_count), "tuned": dict(tuned_count)},
    }


def examples(
    words: Sequence[str], prompts: Sequence[str], completions: Sequence[str], *, per_word: int = 2
) -> list[dict[str, str]]:
    """Up to ``per_word`` completions (with their prompts) that contain each word, for reading."""
    out = []
    for word in words:
        pattern = re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])")
        hits = [i for i, c in enumerate(completions) if pattern.search(c)][:per_word]
        out += [{"word": word, "prompt": prompts[i], "completion": completions[i]} for i in hits]
    return out
