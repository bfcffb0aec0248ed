"""The common shape of every known reward: texts in, one finite float per text out.

A :class:`Reward` is the *training* reward an RL-fine-tuned model was optimised against (the paper's Eq. 3
lexicon reward, the Appendix F classifier logit, or any user function). irmscope compares the model's
implicit reward to it, so a reward that silently returns NaN or the wrong number of scores would poison every
downstream statistic; :meth:`Reward.score` therefore checks the subclass's output before anyone sees it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from irmscope.errors import IrmscopeError

_SNIPPET_CHARS = 60


def _snippet(text: str) -> str:
    """A short, one-line ``repr`` of ``text`` for error messages (repr escapes newlines)."""
    if len(text) > _SNIPPET_CHARS:
        text = text[:_SNIPPET_CHARS] + "..."
    return repr(text)


def _check_one_line(value: Any, what: str) -> str:
    """Names and descriptions end up in one-line errors, logs and LLM prompts, so they must be one line."""
    if not isinstance(value, str) or not value.strip():
        raise IrmscopeError(f"reward {what} must be a non-empty string, got {value!r}: pass a short text")
    if "\n" in value or "\r" in value:
        raise IrmscopeError(f"reward {what} {_snippet(value)} spans several lines: make it one line")
    return value.strip()


def _check_texts(texts: Sequence[str]) -> list[str]:
    """Accept any sequence of strings; reject a bare string, which would otherwise be scored per character."""
    if isinstance(texts, (str, bytes)):
        raise IrmscopeError(
            "score() takes a list of texts, not a single string: wrap it as [text] or use score_one(text)"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise IrmscopeError(
                f"text #{i} to score is a {type(text).__name__}, not a string: pass a list of strings"
            )
    return texts


def _message_text(message: Any) -> str:
    """The text of one chat message; ``content`` may be a string or a list of typed parts."""
    if isinstance(message, str):
        return message
    content = message.get("content", "") if isinstance(message, dict) else message
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return "" if content is None else str(content)


def _trl_text(item: Any) -> str:
    """A TRL prompt or completion as text: a plain string, or a list of chat messages joined by newlines."""
    if item is None:
        return ""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return _message_text(item)
    return "\n".join(_message_text(m) for m in item)


class Reward(ABC):
    """A scalar reward on texts.

    Subclasses implement :meth:`_score`; callers use :meth:`score`, which validates the result. ``name`` is a
    short identifier (logs, file names, TRL's ``rewards/<name>`` metrics); ``description`` is one sentence of
    natural language saying what the reward rewards, written for the LLM that later judges whether a feature
    explanation is related to the reward, so it should be concrete.
    """

    name: str
    description: str

    def __init__(self, name: str, description: str) -> None:
        self.name = _check_one_line(name, "name")
        self.description = _check_one_line(description, "description")

    @abstractmethod
    def _score(self, texts: list[str]) -> Any:
        """Return one number per text (anything :func:`numpy.asarray` turns into floats)."""

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Score ``texts``; a float64 array of shape ``(len(texts),)`` whose entries are all finite.

        Raises :class:`IrmscopeError` naming the reward and the first offending text when the reward returns
        NaN or infinity, and when it returns the wrong number of scores.
        """
        texts = _check_texts(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        raw = self._score(texts)
        if isinstance(raw, (list, tuple)):
            missing = [i for i, x in enumerate(raw) if x is None]
            if missing and len(raw) == len(texts):
                raise IrmscopeError(
                    f"reward {self.name!r} returned None for text {_snippet(texts[missing[0]])}: "
                    "fix the reward function so it returns a number for every text"
                )
        try:
            scores = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise IrmscopeError(
                f"reward {self.name!r} returned {type(raw).__name__} values that are not numbers: "
                "fix the reward function so it returns one float per text"
            ) from None
        scores = scores.reshape(-1) if scores.ndim == 2 and 1 in scores.shape else scores
        if scores.ndim != 1 or scores.shape[0] != len(texts):
            raise IrmscopeError(
                f"reward {self.name!r} returned {scores.size} scores (shape {scores.shape}) "
                f"for {len(texts)} texts: "
                "fix the reward function so it returns exactly one float per text"
            )
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            i = int(bad[0])
            more = f" (and {bad.size - 1} more texts)" if bad.size > 1 else ""
            value = scores[i]
            shown = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            raise IrmscopeError(
                f"reward {self.name!r} returned {shown} for text {_snippet(texts[i])}{more}: "
                "fix the reward function so it returns finite numbers"
            )
        return scores

    def score_completions(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """Score each prompt followed by its completion: as in the paper (and TRL's model rewards), the
        scored text is the whole review, since a sentiment reward reads the prompt's context too. (A reward
        that reads a model overrides this to tokenise the two apart, as the policy wrote them.)"""
        return self.score([p + c for p, c in zip(prompts, completions, strict=True)])

    def score_one(self, text: str) -> float:
        """Score a single text."""
        return float(self.score([text])[0])

    def as_trl_reward_func(self) -> Callable[..., list[float]]:
        """This reward as a custom reward function for TRL's GRPOTrainer/RLOOTrainer (``reward_funcs=``).

        TRL (1.16) calls ``f(prompts=..., completions=..., completion_ids=..., **dataset_columns)`` and
        expects a list with one float per completion; it logs the function under its ``__name__``, which is
        set to :attr:`name`. Like the paper (and TRL's own model rewards), the scored text is the prompt
        concatenated with its completion. Conversational samples (lists of ``{"role", "content"}`` messages)
        become text by joining the messages' contents with newlines; prompt and completion are then joined
        by a newline.
        """
        reward = self

        def reward_func(prompts: Any = None, completions: Any = None, **kwargs: Any) -> list[float]:
            if completions is None:
                raise IrmscopeError(
                    f"reward {reward.name!r} was called without completions: pass completions=[...]"
                )
            completions = list(completions)
            prompts = [None] * len(completions) if prompts is None else list(prompts)
            if len(prompts) != len(completions):
                raise IrmscopeError(
                    f"reward {reward.name!r} got {len(prompts)} prompts for {len(completions)} completions: "
                    "pass one prompt per completion"
                )
            prompt_texts, completion_texts = [], []
            for prompt, completion in zip(prompts, completions, strict=True):
                chat = not isinstance(completion, str) or (prompt is not None and not isinstance(prompt, str))
                sep = "\n" if chat and prompt else ""
                prompt_texts.append(_trl_text(prompt) + sep)
                completion_texts.append(_trl_text(completion))
            return [float(x) for x in reward.score_completions(prompt_texts, completion_texts)]

        reward_func.__name__ = self.name
        reward_func.__qualname__ = self.name
        reward_func.__doc__ = self.description
        return reward_func

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CallableReward(Reward):
    """Any Python function from a list of texts to a list (or array) of floats, used as a reward."""

    def __init__(self, fn: Callable[[list[str]], Any], name: str, description: str) -> None:
        if not callable(fn):
            raise IrmscopeError(f"CallableReward needs a function, got {type(fn).__name__}: pass a callable")
        super().__init__(name, description)
        self.fn = fn

    def _score(self, texts: list[str]) -> Any:
        return self.fn(texts)
