"""The token-level implicit reward of every single-token word of the vocabulary, with a noise floor.

An auditor has no lexicon, so every word is a candidate. A word ``w`` is one vocabulary token that decodes
to a space and letters (``" great"``) and that is what the tokenizer gives back for ``" great"``
(:func:`~irmscope.elicit.continuations.word_token_ids` checks the round trip). Each model runs once over a
set of texts; from the same full-vocabulary logits, at every position ``c``:

* ``Δ_c(w) = log p_tuned(w|c) − log p_base(w|c) − m_c``: the log-ratio of the two models, less ``m_c``,
  the *median* log-ratio over all words at that position. Under KL-regularised RL the log-ratio is the
  reward of ``w`` minus a baseline shared by every word at ``c`` (the DPO identity, per token); when tuning
  raises a few words, the softmax lowers all the others by the same factor, and without the median they
  would all look penalised. The median is the baseline of the typical word, which a sparse reward leaves
  alone.
* the **expected-count shift** ``Σ_c p_base(w|c)·(exp(Δ_c(w)) − 1)``: how many more times the tuned model
  would write ``w`` at these positions than the base model (after the shared renormalisation). It scales
  with the word's frequency, so it is what the "share of the change" reads, not what the audit ranks.
* the **mean log-ratio** ``mean_c Δ_c(w)``: every position weighs the same. It is the naive ranking, kept as
  a control: the log-ratio of a token the base model almost never writes moves with the logit tail, so
  the naive ranking puts rare tokens first.

**The relative shift.** A word's effect is ``r(w) = Σ_c p_base(w|c)·Δ_c(w) / (Σ_c p_base(w|c) + ε)`` (sums
over all texts): the log-factor by which tuning multiplies the word's rate, averaged where the base model
would write it, so a frequent function word's small relative drift does not outrank a content word whose
rate doubled. ``ε`` is fixed before looking at any word: the expected count per text of one token under a
uniform next-token distribution (positions per text / vocabulary size). A word the base model writes
less often than that is shrunk towards 0 (a token nobody writes, whose log-ratio moves with the logit
tail, cannot top the ranking), a word it writes much more often keeps its log-factor. The numerator is
linear in ``Δ``, so context-to-context jitter in the logits does not bias it (``exp(Δ) − 1`` would:
Jensen). Its standard error is the ratio estimator's (delta method over units).

**The noise floor: an empirical null.** Texts are the unit of noise (positions within a text are not
independent): each prompt's two texts (the base and the tuned completion) form one unit. A real fine-tune
moves every word's logit a little, consistently over texts, so "this word did not change at all" is false
for nearly every word, and a test of it calls most of the vocabulary. The floor instead tests each word
against the *drift the words around it share*: under the null, a word's true relative shift is drawn from
the shifts of words the base model writes about as often, ``N(μ₀(f), τ₀(f)²)``, and its estimate adds
its own sampling noise, so ``z(w) = (r(w) − μ₀(f_w)) / √(τ₀(f_w)² + se(w)²)`` is standard normal.
Frequency matters because a sharper or flatter softmax (a temperature change, which tuning towards a
reward tends to make) raises frequent words and lowers rare ones, and because ``ε`` shrinks rare words'
shifts. Sorted by base frequency, each neighbourhood of :data:`NULL_WINDOW` of the words gives a running
median (the centre ``c``). The drift's spread ``τ₀`` comes from bands of :data:`NULL_DRIFT_BANDS`
neighbourhoods (centred every half band, linear in rank between them): the ``τ ≥ 0`` at which the
median of ``|r − c| / √(τ² + se²)`` over the band, each word weighted by ``1/(τ² + se²)``, is the
normal's 0.6745 (a robust Paule–Mandel step, by bisection). It weighs each word's own noise, so words
measured far better than their band's typical word are tested against the drift, not against their own
noise alone (the MAD of ``r`` less the median ``se²`` collapsed ``τ₀`` there and called such words).
Efron's empirical null (:class:`statsmodels.stats.multitest.NullDistribution`: a normal fitted by
truncated maximum likelihood to the central values of ``u = (r − c)/√(τ₀² + se²)``) then recentres and
rescales ``u`` once for all words; on the stand-ins it barely moves (sd within a few percent of 1). A
scale below :data:`NUMERICAL_FLOOR` is raised to it. The assumption is Efron's, per frequency: most
words are not rewarded, so the bulk is the null. A reward packed into one frequency band (a lexicon of
the most frequent words, say), one-directional or two-sided, raises that band's centre or drift and is
partly absorbed; the summary reports the drift of the band of the most frequent words beside the median
band's, so an inflated band shows. Two-sided p-values from that null, then Benjamini–Hochberg at level
``q``, call the words (of the called words, a fraction ``q`` are false in expectation, *false* meaning
"inside the drift of its neighbours"). Called words are ranked by ``r − μ₀``, the shift beyond that
drift. Each word also gets a percentile bootstrap interval over units for every estimate (the same
resamples for every word, one matrix product).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from scipy.ndimage import median_filter
from statsmodels.stats.multitest import NullDistribution

from irmscope.elicit.agreement import word_resamples
from irmscope.elicit.continuations import word_token_ids
from irmscope.errors import IrmscopeError
from irmscope.io import write_npz
from irmscope.models.loading import LoadedModel
from irmscope.models.reading import PairBatch, Reader, read_pairs
from irmscope.models.tokenizer_copies import backend_state

#: false-discovery rate of the floor
FDR_Q = 0.05
#: the share of the words in each base-frequency neighbourhood of the empirical null
NULL_WINDOW = 0.02
#: the drift's spread is estimated in bands of this many neighbourhoods (6% of the vocabulary): a band of
#: one neighbourhood holds too few precisely measured words, and its noisy spread lets them be called
NULL_DRIFT_BANDS = 3
#: the fewest words (and neighbourhood size) the null is estimated from
NULL_MIN_WORDS = 51
#: the least scale a word's z divides by (nats): float32 logits of order 10 resolve a log-ratio to about
#: 1e-6, so a shift below it is numerical noise, never evidence (e.g. unchanged rows of the same model)
NUMERICAL_FLOOR = 1e-6
_WORD = re.compile(r" [A-Za-z]+")


def vocabulary_words(tokenizer) -> dict[str, int]:
    """``{word: token id}`` for every token that decodes to a space and letters and is what the tokenizer
    gives for that text (so a word's probability is one next-token probability).

    The answer is kept per tokenizer, keyed by a digest of its fast backend's components
    (:func:`_tokenizer_digest`: the same components read and write the same words), because the
    read-samples and audit stages and every audit ask again, and the pass over a 49,152-token vocabulary
    takes over a second where the digest takes 25–40 ms. A tokenizer without a fast backend is read afresh
    every time."""
    key = _tokenizer_digest(tokenizer)
    if key is None:
        return _vocabulary_words(tokenizer)
    if key not in _VOCABULARIES:
        if len(_VOCABULARIES) >= _VOCABULARIES_KEPT:
            _VOCABULARIES.pop(next(iter(_VOCABULARIES)))  # the oldest
        _VOCABULARIES[key] = _vocabulary_words(tokenizer)
    return dict(_VOCABULARIES[key])  # a copy: a caller may change its own


#: the words of the tokenizers :func:`vocabulary_words` read, by :func:`_tokenizer_digest`; the first read
#: goes first when a fifth comes
_VOCABULARIES: dict[str, dict[str, int]] = {}
_VOCABULARIES_KEPT = 4


def _tokenizer_digest(tokenizer) -> str | None:
    """A digest of everything that makes the tokenizer's words: its class, its fast backend's
    :func:`~irmscope.models.tokenizer_copies.backend_state` (added tokens, normaliser, pre-tokeniser,
    post-processor and decoder) and its model (vocabulary and merges); ``None`` for a tokenizer without a
    fast backend. Not the whole backend's serialisation: that holds the padding the last padded call set,
    which changes no word."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "get_added_tokens_decoder"):
        return None
    digest = hashlib.sha256(type(tokenizer).__qualname__.encode())
    digest.update(b"\0" + repr(backend_state(backend)).encode())
    digest.update(b"\0" + backend.model.__getstate__())
    return digest.hexdigest()


def _vocabulary_words(tokenizer) -> dict[str, int]:
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    decoded = ((tokenizer.convert_tokens_to_string([p]), i) for i, p in enumerate(pieces) if p is not None)
    candidates = {text[1:]: i for text, i in decoded if _WORD.fullmatch(text)}
    ids = word_token_ids(tokenizer, candidates)
    return {w: i for w, i in ids.items() if candidates[w] == i}


@dataclass
class PairedActivations:
    """Both models' activations at ``site`` on the same tokens, read during :func:`unit_shifts`'s forward
    passes: ``pairs`` is ``[n_tokens, 2, width]`` (base, tuned); ``unit`` and ``side`` say which unit and
    which of its texts (0, 1, ...) each token is from, ``position`` where in the text, ``token_id`` what it
    is. The first token of every text is left out: its activations are an attention sink's, orders of
    magnitude larger than the rest."""

    site: str
    pairs: torch.Tensor
    unit: np.ndarray
    side: np.ndarray
    position: np.ndarray
    token_id: np.ndarray


@dataclass
class UnitShifts:
    """Per unit (row) and word (column) of :func:`unit_shifts`: ``[n_units, n_words]`` arrays."""

    expected_count: np.ndarray  #: expected-count shift per text
    log_ratio: np.ndarray  #: mean log-ratio over the unit's positions
    statistic: np.ndarray  #: the floor's test statistic ``s`` per text
    base_count: np.ndarray  #: expected count under the base model per text
    baseline: np.ndarray  #: ``[n_units]``: mean over positions of the shared median log-ratio ``m_c``
    positions: np.ndarray  #: ``[n_units]``: positions per text
    vocab_size: int  #: the models' number of next tokens
    prompt_tokens: np.ndarray  #: ``[n_units]``: each unit's prompt length in tokens
    activations: PairedActivations | None = None  #: the ``site`` asked for, read on the same passes

    FILE = "unit_shifts.npz"
    ACTIVATIONS_FILE = "paired_activations.npz"

    def save(self, folder: Path) -> None:
        """Write the arrays to ``FILE`` in ``folder`` (and the activations, if any, to
        ``ACTIVATIONS_FILE``): what the pipeline's read stage hands the audit."""
        arrays = {name: getattr(self, name) for name in _UNIT_ARRAYS}
        write_npz(Path(folder) / self.FILE, {**arrays, "vocab_size": np.asarray(self.vocab_size)})
        if self.activations is not None:
            paired = self.activations
            write_npz(
                Path(folder) / self.ACTIVATIONS_FILE,
                {
                    "site": np.asarray(paired.site),
                    "pairs": paired.pairs.numpy(),
                    **{name: getattr(paired, name) for name in ("unit", "side", "position", "token_id")},
                },
            )

    @classmethod
    def load(cls, folder: Path) -> UnitShifts:
        path = Path(folder) / cls.FILE
        if not path.is_file():
            raise IrmscopeError(f"no per-unit word shifts at {path}; rerun the read stage")
        saved = np.load(path)
        activations = None
        if (Path(folder) / cls.ACTIVATIONS_FILE).is_file():
            paired = np.load(Path(folder) / cls.ACTIVATIONS_FILE)
            activations = PairedActivations(
                str(paired["site"]),
                torch.from_numpy(paired["pairs"]),
                *(paired[name] for name in ("unit", "side", "position", "token_id")),
            )
        return cls(
            **{name: saved[name] for name in _UNIT_ARRAYS},
            vocab_size=int(saved["vocab_size"]),
            activations=activations,
        )

    def first_units(self, n: int) -> UnitShifts:
        """The shifts (and activations) of the first ``n`` units only."""
        if n > len(self.positions):
            raise IrmscopeError(
                f"{n} units asked of word shifts read on {len(self.positions)}; read more samples"
            )
        paired = self.activations
        if paired is not None:
            keep = paired.unit < n
            paired = PairedActivations(
                paired.site, paired.pairs[torch.from_numpy(keep)], paired.unit[keep], paired.side[keep],
                paired.position[keep], paired.token_id[keep],
            )  # fmt: skip
        per_unit = {name: getattr(self, name)[:n] for name in _UNIT_ARRAYS}
        return UnitShifts(**per_unit, vocab_size=self.vocab_size, activations=paired)

    @property
    def uniform_count(self) -> float:
        """``ε`` of the relative shift: the expected count per text of one token under a uniform next-token
        distribution, fixed by the sizes alone (no word's numbers enter it)."""
        return float(self.positions.mean() / self.vocab_size)


_UNIT_ARRAYS = (
    "expected_count",
    "log_ratio",
    "statistic",
    "base_count",
    "baseline",
    "positions",
    "prompt_tokens",
)


class UnitSums(Reader):
    """Folds :func:`_text_sums` over :func:`~irmscope.models.reading.read_pairs`'s batches into
    :class:`UnitShifts`. ``owner[i]`` is the unit of input text ``i`` (-1: the text is in no unit) and
    ``within[i]`` which of the unit's texts it is; the models are read under the labels "tuned" and
    "base". With ``site``, both models' activations there are kept too (:class:`PairedActivations`)."""

    LABELS = ("tuned", "base")

    def __init__(
        self, word_ids: Sequence[int], owner: np.ndarray, within: np.ndarray, site: str | None = None
    ) -> None:
        self.words = torch.tensor(list(word_ids))
        self.owner, self.within, self.site = np.asarray(owner), np.asarray(within), site
        self.n_units = int(self.owner.max()) + 1 if len(self.owner) else 0
        self._rows: list[np.ndarray] = []
        self._prompt_tokens = np.zeros(self.n_units, dtype=np.int64)
        self._sums: dict[str, list[torch.Tensor]] = {k: [] for k in ("ec", "lr", "s", "base", "m", "n")}
        self._read: dict[str, list] = {k: [] for k in ("pairs", "text", "position", "token_id")}
        self.vocab_size = 0

    def sites(self, label: str) -> Sequence[str]:
        return [self.site] if self.site and label in self.LABELS else ()

    def needs_logits(self, label: str) -> bool:
        return label in self.LABELS

    def update(self, batch: PairBatch) -> None:
        chosen = self.owner[batch.rows] >= 0
        if not chosen.any():
            return
        pick = torch.from_numpy(np.flatnonzero(chosen))
        rows, mask = batch.rows[chosen], batch.mask[pick]
        self._rows.append(rows)
        self._prompt_tokens[self.owner[rows]] = batch.prompt_lengths[pick].numpy()
        if self.site:
            self._keep_activations(batch, pick, rows, mask)
        device = batch.logits["base"].device  # the tuned model's tensors are moved there, if elsewhere

        def chosen_rows(tensor: torch.Tensor) -> torch.Tensor:  # no copy when every row is chosen
            return (tensor if chosen.all() else tensor[pick.to(tensor.device)]).to(device)

        logits_t, logits_b = chosen_rows(batch.logits["tuned"]), chosen_rows(batch.logits["base"])
        self.vocab_size = logits_b.shape[-1]
        normalisers = (chosen_rows(batch.log_normaliser("tuned")), chosen_rows(batch.log_normaliser("base")))
        sums = _text_sums(logits_t, logits_b, self.words.to(device), mask.to(device).float(), normalisers)
        for key, value in sums.items():
            self._sums[key].append(value)

    def _keep_activations(
        self, batch: PairBatch, pick: torch.Tensor, rows: np.ndarray, mask: torch.Tensor
    ) -> None:
        """Both models' activations at the site on every token of the chosen rows but the first."""
        positions = torch.arange(mask.shape[1]).expand_as(mask)
        keep = mask.bool() & (positions > 0)
        acts = {label: batch.activations[label][self.site] for label in self.LABELS}
        device = acts["base"].device
        kept = {
            label: act[pick.to(act.device)][keep.to(act.device)].to(device) for label, act in acts.items()
        }
        self._read["pairs"].append(torch.stack([kept["base"], kept["tuned"]], 1).float().cpu())
        self._read["text"].append(rows[torch.nonzero(keep)[:, 0].numpy()])
        self._read["position"].append(positions[keep].numpy())
        self._read["token_id"].append(batch.input_ids[pick][keep].numpy())

    def result(self) -> UnitShifts:
        if not self._rows:
            raise IrmscopeError("no texts to score; give at least one prompt")
        rows = np.concatenate(self._rows)
        if sorted(rows.tolist()) != np.flatnonzero(self.owner >= 0).tolist():
            raise IrmscopeError(f"the word shifts saw {len(rows)} of {int((self.owner >= 0).sum())} texts")
        units = self.owner[rows]
        sizes = np.bincount(units, minlength=self.n_units).astype(np.float64)

        def by_unit(key: str) -> np.ndarray:
            values = torch.cat(self._sums[key]).numpy()
            out = np.zeros((self.n_units, values.shape[1]))
            np.add.at(out, units, values)
            return out / sizes[:, None]

        return UnitShifts(
            activations=self._activations(),
            expected_count=by_unit("ec"),
            log_ratio=by_unit("lr"),
            statistic=by_unit("s"),
            base_count=by_unit("base"),
            baseline=by_unit("m")[:, 0],
            positions=by_unit("n")[:, 0],
            vocab_size=self.vocab_size,
            prompt_tokens=self._prompt_tokens,
        )

    def _activations(self) -> PairedActivations | None:
        """The kept activations, in text order and position order within a text (the batches were read
        in length order)."""
        if not self.site:
            return None
        text, position = np.concatenate(self._read["text"]), np.concatenate(self._read["position"])
        order = np.lexsort((position, text))
        return PairedActivations(
            self.site,
            torch.cat(self._read["pairs"])[torch.from_numpy(order)],
            self.owner[text][order],
            self.within[text][order],
            position[order],
            np.concatenate(self._read["token_id"])[order],
        )


def unit_shifts(
    tuned: LoadedModel,
    base: LoadedModel,
    prompts: Sequence[str],
    sides: Sequence[Sequence[str]],
    word_ids: Sequence[int],
    *,
    max_length: int | None = None,
    batch_size: int = 16,
    site: str | None = None,
) -> UnitShifts:
    """One forward pass per model over every text of every unit; per-unit sums of the per-position
    quantities in the module docstring, divided by the unit's number of texts (so "per text"). Unit ``i``
    is ``prompts[i]`` continued by each side's ``i``-th completion (``sides``: e.g. the base model's
    completions and the tuned model's). With ``site``, the same passes also read both models' activations
    there (:class:`PairedActivations`), so a crosscoder on them costs no further pass."""
    if not prompts:
        raise IrmscopeError("no texts to score; give at least one prompt")
    if any(len(side) != len(prompts) for side in sides):
        raise IrmscopeError("give every side one completion per prompt")
    n = len(prompts)
    sums = UnitSums(word_ids, np.tile(np.arange(n), len(sides)), np.repeat(np.arange(len(sides)), n), site)
    read_pairs(
        {"tuned": tuned, "base": base}, list(prompts) * len(sides), [c for side in sides for c in side],
        [sums], max_length=max_length, batch_size=batch_size,
    )  # fmt: skip
    return sums.result()


def _text_sums(
    logits_t: torch.Tensor,
    logits_b: torch.Tensor,
    words: torch.Tensor,
    mask: torch.Tensor,
    normalisers: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """One batch's per-text sums over real positions (see the module docstring): the statistic ``s``, the
    mean log-ratio ``lr``, the base model's expected count ``base``, the mean shared shift ``m``, the number
    of positions ``n`` and the expected-count shift ``ec``."""
    # Δ as a difference of logits less a difference of normalisers: a word whose logit tuning left
    # alone gets exactly the same Δ as every other such word at that position, so the median removes
    # it exactly (float32 keeps that: equal inputs give equal outputs)
    lse_t, lse_b = normalisers  # each model's logsumexp over the vocabulary at every position
    shared = lse_t - lse_b
    word_b = logits_b[..., words]
    raw = logits_t[..., words] - word_b - shared
    p_base = (word_b - lse_b).exp_().mul_(mask[..., None])
    del word_b
    median = lower_median(raw)
    delta = raw.sub_(median[..., None])
    n_positions = mask.sum(1, keepdim=True).double()
    return {
        "s": (p_base * delta).double().sum(1).cpu(),
        "lr": ((delta * mask[..., None]).double().sum(1) / n_positions).cpu(),
        "base": p_base.double().sum(1).cpu(),
        "m": ((median * mask).double().sum(1, keepdim=True) / n_positions).cpu(),
        "n": n_positions.cpu(),
        "ec": (p_base * torch.expm1(delta)).double().sum(1).cpu(),
    }


def lower_median(values: torch.Tensor) -> torch.Tensor:
    """The median over the last dimension, the lower of the two middle values for an even count: what
    ``values.median(dim=-1).values`` returns (no gradient). For float32 and float64 on the CPU it is
    numpy's partial sort (introselect), about 4x as fast as torch's here on ``[16, 62, 31586]`` word
    log-ratios (60 against 240 ms), where it was the largest part of the audit's word sums; anything else
    (another device or dtype, an empty or 0-d tensor) goes to torch's."""
    native = values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64)
    if not native or values.dim() == 0 or values.shape[-1] == 0:
        return values.median(dim=-1).values.detach()
    middle = (values.shape[-1] - 1) // 2
    numbers = values.detach().numpy()
    median = np.partition(numbers, middle, axis=-1)[..., middle].copy()
    median[np.isnan(numbers).any(-1)] = np.nan  # torch's median of a row with a NaN is NaN
    return torch.from_numpy(median)


def relative_shift(
    statistic: np.ndarray, base_count: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per word (column of the ``[n_units, n_words]`` arrays of :class:`UnitShifts`): the relative shift
    ``mean s / (mean base count + eps)`` and its standard error (the ratio estimator's delta method over
    units). A column constant over units has standard error 0."""
    n = statistic.shape[0]
    if n < 2:
        raise IrmscopeError(f"the noise floor needs at least 2 prompts to measure spread, got {n}")
    if not eps > 0:
        raise IrmscopeError(f"the relative shift needs eps > 0, got {eps}")
    denominator = base_count.mean(0) + eps
    effect = statistic.mean(0) / denominator
    residual = (statistic - effect * base_count) / denominator
    return effect, residual.std(0, ddof=1) / np.sqrt(n)


def empirical_null(effect: np.ndarray, se: np.ndarray, frequency: np.ndarray) -> dict[str, Any]:
    """The null each word's relative shift is tested against, from the bulk of the words of similar base
    ``frequency`` (see the module docstring): per word its centre, the spread of the shared drift
    (sampling noise removed) and the scale its ``z`` divides by, and a summary (JSON-ready)."""
    if len(effect) < NULL_MIN_WORDS:
        raise IrmscopeError(
            f"the shared drift is estimated from at least {NULL_MIN_WORDS} words, got {len(effect)}"
        )
    order = np.argsort(frequency, kind="stable")
    values, noise = effect[order], se[order] ** 2
    size = max(NULL_MIN_WORDS, round(NULL_WINDOW * len(order))) // 2 * 2 + 1  # odd: centred windows
    local_centre = _running_median(values, size)
    deviation = values - local_centre
    anchors, band_drift = _band_drift(np.abs(deviation), noise, NULL_DRIFT_BANDS * size)
    drift = np.interp(np.arange(len(order)), anchors, band_drift**2)  # τ², linear in rank between bands
    total = np.sqrt(drift + noise)
    fit = {"mean": 0.0, "sd": 1.0}
    spread_out = total > 0  # a word without any spread (e.g. the same model twice) has no null
    if spread_out.sum() >= NULL_MIN_WORDS:
        # the fit's optimiser may try a null with all of its mass in the central region: statsmodels then
        # takes log(1 - 1) = -inf, which rejects the trial as it should, but numpy would print a warning
        with np.errstate(divide="ignore"):
            efron = NullDistribution(deviation[spread_out] / total[spread_out])
        fit = {"mean": float(efron.mean), "sd": float(efron.sd)}
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))  # every word takes its own neighbourhood's null
    centre = (local_centre + fit["mean"] * total)[rank]
    scale = np.maximum(fit["sd"] * total, NUMERICAL_FLOOR)[rank]
    drift_sd = (fit["sd"] * np.sqrt(drift))[rank]
    summary = {
        "window": size,
        "fit_mean": fit["mean"],
        "fit_sd": fit["sd"],
        "centre_range": [float(centre.min()), float(centre.max())],
        "median_centre": float(np.median(centre)),
        "median_drift_sd": float(np.median(drift_sd)),
        "n_bands": len(anchors),
        "most_frequent_band_drift_sd": float(fit["sd"] * band_drift[-1]),
        "median_band_drift_sd": float(fit["sd"] * np.median(band_drift)),
    }
    return {"centre": centre, "drift_sd": drift_sd, "scale": scale, "summary": summary}


def _band_drift(deviation: np.ndarray, noise: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The drift's standard deviation ``τ`` in bands of ``size`` consecutive words (of the words sorted by
    frequency; bands centred every half band, the last one on the most frequent words), and each band's
    centre (a rank): the ``τ ≥ 0`` at which ``median |r − c| / √(τ² + se²)`` over the band is the normal's
    0.6745 (a robust Paule–Mandel step, by bisection for every band at once). Unlike the MAD of ``r`` less
    the median ``se²``, it weighs each word's own noise, so words measured far better than their band's
    typical word are not tested against their own noise alone. ``deviation`` is ``|r − c|``, ``noise``
    ``se²``."""
    n = len(deviation)
    half = min(size, n) // 2
    anchors = np.unique(np.r_[np.arange(half, n - half, max(half, 1)), n - 1 - half])
    rows = np.clip(anchors[:, None] + np.arange(-half, half + 1)[None, :], 0, n - 1)
    d, s = deviation[rows], noise[rows]
    target = float(stats.norm.ppf(0.75))

    def median_ratio(tau2: np.ndarray) -> np.ndarray:
        total = tau2[:, None] + s
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, d / np.sqrt(total), np.where(d > 0, np.inf, 0.0))
            weight = np.where(total > 0, 1 / total, 1.0)
        return _weighted_median(ratio, weight / weight.sum(axis=1, keepdims=True))

    low = np.zeros(len(anchors))
    high = (d.max(axis=1) / target) ** 2  # every ratio is at most the target there
    needed = median_ratio(low) > target  # else τ = 0: the words' own noise explains the band
    for _ in range(60):
        middle = (low + high) / 2
        above = median_ratio(middle) > target
        low, high = np.where(above, middle, low), np.where(above, high, middle)
    return anchors, np.where(needed, np.sqrt(high), 0.0)


def _weighted_median(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per row, the value at which the cumulative ``weight`` (each row sums to 1) of the sorted values
    reaches one half."""
    order = np.argsort(values, axis=1)
    cumulative = np.cumsum(np.take_along_axis(weight, order, axis=1), axis=1)
    at = np.minimum((cumulative < 0.5).sum(axis=1), values.shape[1] - 1)
    return np.take_along_axis(values, order, axis=1)[np.arange(len(values)), at]


def _running_median(values: np.ndarray, size: int) -> np.ndarray:
    """The median of each value's neighbourhood of ``size`` values (centred; at either end, the first or
    last ``size`` values, so an edge is never padded with copies of itself)."""
    if len(values) <= size:
        return np.full(len(values), np.median(values))
    out = median_filter(values, size=size, mode="nearest")
    half = size // 2
    out[:half], out[-half:] = np.median(values[:size]), np.median(values[-size:])
    return out


def noise_floor(
    effect: np.ndarray, se: np.ndarray, frequency: np.ndarray, *, df: int | None = None, q: float = FDR_Q
) -> dict[str, Any]:
    """Per word: ``z`` against the empirical null (:func:`empirical_null`), the two-sided p-value (normal,
    or Student t with ``df`` degrees of freedom: the standard errors come from ``df + 1`` units, and with
    few units a word whose own noise dominates has heavier tails than the normal's),
    the Benjamini–Hochberg adjusted p-value, whether it is called (adjusted p ≤ ``q``), its effect beyond
    the drift (``effect − centre``); and the null's summary. A word with no spread at all under the null
    (the same model twice) has z = 0 and p = 1."""
    null = empirical_null(effect, se, frequency)
    beyond = effect - null["centre"]
    z = beyond / null["scale"]
    tail = stats.norm.sf(np.abs(z)) if df is None else stats.t.sf(np.abs(z), df=df)
    p = 2 * tail
    adjusted = stats.false_discovery_control(p, method="bh")
    return {"z": z, "p": p, "q": adjusted, "called": adjusted <= q, "beyond": beyond, "null": null["summary"]}


def bootstrap_intervals(
    per_unit: np.ndarray,
    *,
    denominator: tuple[np.ndarray, float] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile 95% intervals of each column's mean over units, or, with ``denominator = (per-unit
    array, offset)``, of the ratio of the two means (the offset added below): every column is resampled
    with the same unit draws (one ``[resamples, units] @ [units, words]`` product per chunk of words)."""
    n = per_unit.shape[0]
    weights = word_resamples(n, n_resamples, seed) / n
    low, high = np.empty(per_unit.shape[1]), np.empty(per_unit.shape[1])
    for start in range(0, per_unit.shape[1], chunk):
        means = weights @ per_unit[:, start : start + chunk]
        if denominator is not None:
            means /= weights @ denominator[0][:, start : start + chunk] + denominator[1]
        low[start : start + chunk], high[start : start + chunk] = np.percentile(means, [2.5, 97.5], axis=0)
    return low, high
