"""The token-level implicit reward: how much tuning raised each word's probability.

Under KL-regularised RL with coefficient β the optimal policy is ``π*(a|s) ∝ π_ref(a|s)·exp(Q(s,a)/β)``, so
``β·log(π*(w|s)/π_ref(w|s)) = Q(s, w) − V(s)``: the log-ratio of the tuned to the reference model is the
reward of emitting ``w`` (plus the value of what follows) up to a baseline that depends on the context only
(Rafailov et al.'s DPO identity, applied per token). For a lexicon reward, which pays each word its value,
an average of a word's log-ratio over a fixed set of contexts ranks words by their implicit reward: the
context baselines are shared by all words and cancel from the ranking. The contexts are every position of
a set of texts (one forward pass per text gives them all), so a few hundred texts give tens of thousands.

Two averages are computed from the same log-probabilities (:data:`ESTIMATES`):

* ``mean-log-ratio``: every context weighs the same.
* ``expected-count``: ``β·log(Σ_c π_tuned(w|c) / Σ_c π_ref(w|c))``, the log-ratio of the expected number of
  times each model would write ``w`` at these (teacher-forced) positions. It equals
  ``β·log Σ_c p_c·exp(Δ_c)`` with ``p_c`` the reference's share of the word's probability mass at context
  ``c`` and ``Δ_c`` the log-ratio there: contexts where the word is a live option dominate, and the many
  where its probability is e⁻²⁰ and moves with the logit tail barely count. The price: the weights depend
  on the word, so the context baselines no longer cancel exactly (each word sees a weighted average of
  them, over the contexts that suit it). Tuning changes a word's probability where the policy wrote it or
  might have; that is where this estimate looks.

Each estimate is a difference of two *levels*, one per model (the mean log-probability, the log expected
count). No fitting is involved, so every word is held out. The untuned base model is its own reference, so
for it the shift is zero everywhere; its control is the reference's level alone, i.e. whether how often the
base model would write each word already predicts the reward (a planted reward on frequent words should
not be predicted by frequency). The other control is a model tuned against a *different* reward, which has
drifted from the base as much but towards other words: run the pipeline with that model as ``model.tuned``
and this lexicon as the reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from irmscope.elicit.continuations import word_token_ids
from irmscope.errors import IrmscopeError
from irmscope.io import write_npz
from irmscope.models.loading import LoadedModel
from irmscope.models.reading import PairBatch, Reader, input_order, read_pairs

ESTIMATES = ("mean-log-ratio", "expected-count")


@dataclass
class PolicyShift:
    """What :func:`policy_shift` returns; both fields map an estimate name to ``{word: value}``.

    ``shift`` is ``β·(level under tuned − level under reference)``; ``reference_level`` is the level under
    the reference alone (its control: what the untuned model's word frequencies say by themselves).
    """

    shift: dict[str, dict[str, float]]
    reference_level: dict[str, dict[str, float]]

    def of(self, estimate: str = "mean-log-ratio") -> dict[str, float]:
        """One estimate's shift as ``{word: shift}``: what a caller that needs one number per word reads."""
        if estimate not in ESTIMATES:
            raise IrmscopeError(
                f"unknown policy-shift estimate {estimate!r}; choose one of {', '.join(ESTIMATES)}"
            )
        return self.shift[estimate]


@dataclass(frozen=True)
class ShiftLevels:
    """Both models' levels of a set of tokens over a set of texts, per text (what :class:`LevelSums` folds
    from one reading of them): per model and text, ``Σ_c log p(t|c)`` and ``log Σ_c p(t|c)`` over the
    text's positions ``c``, for each of ``token_ids`` (``[n_texts, n_tokens]`` float64), and each text's
    number of positions. The :class:`PolicyShift` of any words among those tokens, over any of the texts
    (:meth:`of_texts`), follows without reading them again."""

    token_ids: np.ndarray  #: the tokens the levels are of
    log_prob_sum: dict[str, np.ndarray]  #: label ("tuned", "reference") → ``Σ_c log p(t|c)`` per text
    log_count: dict[str, np.ndarray]  #: label → ``log Σ_c p(t|c)`` per text, its log expected counts
    positions: np.ndarray  #: ``[n_texts]``: the contexts of each text

    FILE = "shift_levels.npz"

    @property
    def n_texts(self) -> int:
        return len(self.positions)

    @property
    def n_contexts(self) -> int:
        return int(self.positions.sum())

    def of_texts(self, rows: Sequence[int] | np.ndarray) -> ShiftLevels:
        """The levels of the texts ``rows`` only."""
        rows = np.asarray(rows, dtype=np.int64)
        return ShiftLevels(
            self.token_ids,
            {label: values[rows] for label, values in self.log_prob_sum.items()},
            {label: values[rows] for label, values in self.log_count.items()},
            self.positions[rows],
        )

    def shift(self, tokenizer, words: Sequence[str], beta: float = 1.0) -> PolicyShift:
        """Every estimate of :data:`ESTIMATES` over all the texts, for the ``words`` that are one token after
        a space (the others are dropped); raises if none is, or if a word's token was not read."""
        ids = word_token_ids(tokenizer, words)
        if not ids:
            raise IrmscopeError("none of the words is a single token after a space for this model")
        if not self.n_contexts:
            raise IrmscopeError("no context was read for the policy shift; give at least one text")
        column = {int(token): i for i, token in enumerate(self.token_ids)}
        unread = [word for word, token in ids.items() if token not in column]
        if unread:
            raise IrmscopeError(
                f"the levels were read for other words than {unread[:3]}; read the texts with these words"
            )
        columns = np.asarray([column[token] for token in ids.values()])

        def levels(label: str) -> dict[str, np.ndarray]:
            return {
                "mean-log-ratio": self.log_prob_sum[label][:, columns].sum(0) / self.n_contexts,
                "expected-count": logsumexp(self.log_count[label][:, columns], axis=0),
            }

        tuned, reference = levels("tuned"), levels("reference")
        by_word = lambda values: dict(zip(ids, values.tolist(), strict=True))  # noqa: E731
        return PolicyShift(
            shift={name: by_word(beta * (tuned[name] - reference[name])) for name in ESTIMATES},
            reference_level={name: by_word(reference[name]) for name in ESTIMATES},
        )

    def save(self, folder: Path) -> None:
        kinds = {"sum": self.log_prob_sum, "count": self.log_count}
        arrays = {
            f"{kind}.{label}": values for kind, named in kinds.items() for label, values in named.items()
        }
        write_npz(
            Path(folder) / self.FILE, {"token_ids": self.token_ids, "positions": self.positions, **arrays}
        )

    @classmethod
    def load(cls, folder: Path) -> ShiftLevels:
        path = Path(folder) / cls.FILE
        if not path.is_file():
            raise IrmscopeError(f"no policy-shift levels at {path}; rerun the read-samples stage")
        saved = np.load(path)
        named: dict[str, dict[str, np.ndarray]] = {"sum": {}, "count": {}}
        for key in saved.files:
            if "." in key:
                kind, label = key.split(".", 1)
                named[kind][label] = saved[key]
        return cls(saved["token_ids"], named["sum"], named["count"], saved["positions"])


class LevelSums(Reader):
    """Folds :class:`ShiftLevels` of ``token_ids`` over :func:`~irmscope.models.reading.read_pairs`'s
    ``n`` texts: every real position of a text is one of its contexts. ``labels`` maps the reading's model
    labels to the levels' ("tuned", "reference")."""

    def __init__(self, labels: dict[str, str], token_ids: Sequence[int], n: int) -> None:
        self.labels, self.n = labels, n
        self.token_ids = torch.as_tensor(list(token_ids), dtype=torch.long)
        self._rows: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._sum: dict[str, list[np.ndarray]] = {name: [] for name in labels.values()}
        self._count: dict[str, list[np.ndarray]] = {name: [] for name in labels.values()}

    def needs_logits(self, label: str) -> bool:
        return label in self.labels

    def update(self, batch: PairBatch) -> None:
        self._rows.append(batch.rows)
        self._positions.append(batch.mask.sum(1).numpy())
        for label, name in self.labels.items():
            logits = batch.logits[label]
            real = batch.mask.bool().to(logits.device)[..., None]
            log_probs = (logits[..., self.token_ids.to(logits.device)] - batch.log_normaliser(label)).double()
            self._sum[name].append(log_probs.masked_fill(~real, 0.0).sum(1).cpu().numpy())
            self._count[name].append(log_probs.masked_fill(~real, -torch.inf).logsumexp(1).cpu().numpy())

    def result(self) -> ShiftLevels:
        inverse = input_order(self._rows, self.n, "the levels")
        ordered = lambda parts: np.concatenate(parts)[inverse]  # noqa: E731
        return ShiftLevels(
            self.token_ids.numpy(),
            {name: ordered(parts) for name, parts in self._sum.items()},
            {name: ordered(parts) for name, parts in self._count.items()},
            ordered(self._positions),
        )


def shift_levels(
    tuned: LoadedModel,
    reference: LoadedModel,
    words: Sequence[str],
    prompts: Sequence[str],
    continuations: Sequence[str],
    max_length: int | None = 64,
    batch_size: int = 16,
) -> ShiftLevels:
    """Both models' :class:`ShiftLevels` of the ``words`` that are one token after a space, with every
    prefix of every prompt + continuation (up to ``max_length`` tokens) as a context. Both models must
    share a tokenizer."""
    if tuned.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        raise IrmscopeError(
            "the tuned and reference models tokenize words differently; use the same tokenizer"
        )
    ids = word_token_ids(tuned.tokenizer, words)
    if not ids:
        raise IrmscopeError("none of the words is a single token after a space for this model")
    sums = LevelSums({"tuned": "tuned", "reference": "reference"}, sorted(set(ids.values())), len(prompts))
    read_pairs(
        {"tuned": tuned, "reference": reference}, prompts, continuations, [sums],
        max_length=max_length, batch_size=batch_size,
    )  # fmt: skip
    return sums.result()


def policy_shift(
    tuned: LoadedModel,
    reference: LoadedModel,
    words: Sequence[str],
    texts: Sequence[str],
    beta: float = 1.0,
    max_length: int = 64,
) -> PolicyShift:
    """Every estimate in :data:`ESTIMATES`, with every prefix of every text (up to ``max_length`` tokens)
    as a context.

    Words that are not one token after a space are dropped. Both models must share a tokenizer.
    """
    levels = shift_levels(tuned, reference, words, [""] * len(texts), texts, max_length=max_length)
    return levels.shift(tuned.tokenizer, words, beta)
