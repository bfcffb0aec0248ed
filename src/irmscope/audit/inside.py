"""What changed inside: a crosscoder at the top-divergence site, its latents ranked by how much tuning
changed them, each put beside the token-level implicit reward of the words it promotes.

The word-level audit (:mod:`.shift`) says *which words* tuning rewarded; this says *which internal
directions* carry the change. Both models run over the same texts (the prompt + completion texts of both
models, the audit's units); at one site their activations on each token form a pair (read on the word
scoring's own forward passes, :func:`~irmscope.audit.shift.unit_shifts`), and a crosscoder
(:mod:`irmscope.sae.crosscoder`) learns one sparse code that reconstructs both. For every latent:

* the **decoder change** ``‖d_tuned − d_base‖ / (‖d_tuned‖ + ‖d_base‖)``, what the first ranking sorts by:
  0 for a latent both models write alike, 1 for one only one model writes;
* the **relative decoder norm** ``‖d_tuned‖ / (‖d_tuned‖ + ‖d_base‖)``: near 1 for a direction only the
  tuned model writes, near 0.5 for one both write (Lindsey et al. 2024);
* the **decoder cosine** between its two halves: a shared latent whose two directions differ was rotated;
* its **firing frequency and mean activation on each model's completion tokens**, and the per-prompt
  paired difference (tuned completion − base completion of the same prompt) with a bootstrap interval over
  prompts: a latent the tuned policy's own text uses more (a description of what it writes, read by a
  code both models share);
* the **words its change promotes**: its tuned decoder row less its base row (what tuning changed in its
  output) through the tuned model's final norm and unembedding (the logit lens), beside each word's
  relative shift from the word-level audit, and the Spearman correlation between the two over every
  audited word. That correlation is dominated by the bulk of words with shifts near 0, and any sizeable
  part of the tuned-minus-base difference agrees with a log-ratio reward somewhat, so it stands beside two
  controls (the latents ranked next by decoder change, and random latents, the studied ones left out of
  both) and two baselines with no latent at all: the difference of the two decoder biases (the change
  every token shares) and the plain mean activation difference.

A prompt's tokens are the same in both of its texts, so they enter training once.
The site is the residual stream after the block whose parameters tuning moved most
(:func:`~irmscope.tune.layer_divergence`, the paper's §4.2 criterion), unless one is given. The first
token of every text is left out (an attention sink's activations would own the reconstruction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats as scipy_stats

from irmscope.audit.shift import PairedActivations
from irmscope.models.adapters import site_name
from irmscope.models.loading import LoadedModel
from irmscope.sae.crosscoder import MODELS, Crosscoder, CrosscoderConfig, train_crosscoder
from irmscope.stats import bootstrap_ci
from irmscope.tune import layer_divergence, top_layers

#: a latent must fire on at least this many audited tokens to be ranked (a latent seen twice has no
#: frequency or mean worth comparing)
MIN_FIRING_TOKENS = 20
#: latents in each ranking
TOP_LATENTS = 10
#: latents whose promoted words' correlation with the implicit reward forms the control
CONTROL_LATENTS = 100


def divergence_site(tuned: LoadedModel, base: LoadedModel, kind: str = "hook_resid_post") -> str:
    """The ``kind`` site of the block whose parameters tuning moved most."""
    return site_name(top_layers(layer_divergence(base, tuned), 1)[0], kind)


@dataclass
class _Codes:
    """The crosscoder's active latents on every token: ``values`` and ``indices`` are ``[n_tokens, k]``."""

    values: torch.Tensor
    indices: torch.Tensor

    def select(self, rows: np.ndarray) -> _Codes:
        """The codes of the tokens where ``rows`` (a boolean mask) is true."""
        mask = torch.from_numpy(rows)
        return _Codes(self.values[mask], self.indices[mask])

    def column(self, latent: int) -> np.ndarray:
        """One latent's activation on every token (0 where it is not among the token's active latents)."""
        return (self.values * (self.indices == latent)).sum(1).numpy()


@torch.no_grad()
def _encode(coder: Crosscoder, pairs: torch.Tensor, batch_size: int = 4096) -> _Codes:
    parts = [coder.encode_sparse(batch) for batch in pairs.split(batch_size)]
    return _Codes(torch.cat([v for v, _ in parts]), torch.cat([i for _, i in parts]))


def _per_text_means(codes: _Codes, text: np.ndarray, n_texts: int, d_sae: int) -> tuple[np.ndarray, ...]:
    """``[n_texts, d_sae]`` mean activation and firing share of every latent on each text's tokens."""
    rows = torch.from_numpy(np.repeat(text, codes.indices.shape[1]))
    flat = rows * d_sae + codes.indices.flatten()
    total = torch.zeros(n_texts * d_sae, dtype=torch.float64).index_add_(
        0, flat, codes.values.flatten().double()
    )
    fired = torch.zeros(n_texts * d_sae, dtype=torch.float64).index_add_(
        0, flat, (codes.values.flatten() > 0).double()
    )
    tokens = np.bincount(text, minlength=n_texts).clip(min=1)[:, None]
    return total.view(n_texts, d_sae).numpy() / tokens, fired.view(n_texts, d_sae).numpy() / tokens


@torch.no_grad()
def promoted_logits(tuned: LoadedModel, directions: torch.Tensor, token_ids: Sequence[int]) -> np.ndarray:
    """``[len(directions), len(token_ids)]``: the logit lens of residual-stream ``directions`` (raw units):
    each through the tuned model's final norm, less the norm of zero (so a LayerNorm's bias, which every
    direction would share, drops out), then the unembedding. The norm divides each direction by its own
    size, which changes no ranking within a row and no correlation; it applies the norm's gain as the
    model does (``w`` for Llama's RMSNorm, ``1 + w`` for Gemma's, centring and ``γ`` for a LayerNorm)."""
    norm = tuned.adapter.final_norm_module(tuned.model)
    weight = tuned.model.get_output_embeddings().weight
    directions = directions.to(device=weight.device, dtype=weight.dtype)
    normed = norm(directions) - norm(torch.zeros_like(directions[:1]))
    unembedding = weight.detach()[list(token_ids)]
    return (normed @ unembedding.T).float().cpu().numpy()


def decoder_changes(coder: Crosscoder, latents: Sequence[int]) -> torch.Tensor:
    """What tuning changed in each latent's output: its tuned decoder row less its base row, in the raw
    units of the activations (each model's scale undone). For a tuned-only latent that is its whole
    output; for a shared one, the part tuning added."""
    t, b = MODELS.index("tuned"), MODELS.index("base")
    rows = coder.W_dec.detach()[list(latents)]
    return rows[:, t] / coder.scale[t] - rows[:, b] / coder.scale[b]


def model_diff(
    tuned: LoadedModel,
    paired: PairedActivations,
    prompt_tokens: Sequence[int],
    vocabulary: Mapping[str, int],
    implicit_reward: np.ndarray,
    config: CrosscoderConfig,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Any], Crosscoder]:
    """Train the crosscoder on ``paired``, both models' activations over the audit's units (per prompt:
    its text with the base model's completion, then with the tuned model's; read by
    :func:`~irmscope.audit.shift.unit_shifts`), and describe its latents (see the module docstring).
    ``prompt_tokens`` is each unit's prompt length in tokens: a prompt's tokens are the same in both of its
    texts, so they enter training once (from the base text), and the use statistics read completion
    tokens only (the last prompt token, which may merge with the completion's first, counts as
    completion). ``vocabulary`` maps the audited words to their token ids, ``implicit_reward`` is their
    value from the word-level audit (relative shift beyond the drift), in the same order; ``tuned`` gives
    the final norm and the unembedding.

    Returns the JSON-ready description (with the difference dictionary's, :func:`difference_dictionary`,
    under ``difference_dictionary``) and the crosscoder."""
    n = len(prompt_tokens)
    pairs, tokens = _training_tokens(paired, prompt_tokens)
    coder, log = train_crosscoder(pairs, config, seed=seed, progress=progress)
    use = _LatentUse.of(coder, pairs, tokens, n)
    relative = coder.relative_decoder_norm(MODELS.index("tuned"))
    changed = coder.decoder_change(MODELS.index("tuned"), MODELS.index("base"))
    cosine = coder.decoder_cosine()
    ranked = use.fired >= MIN_FIRING_TOKENS
    by_change, by_use, matched, drawn = _latent_sets(changed, use.change.mean(0), ranked, seed)
    studied = list(dict.fromkeys(by_change + by_use))
    t, b = MODELS.index("tuned"), MODELS.index("base")
    shared_offset = (coder.b_dec[t] / coder.scale[t] - coder.b_dec[b] / coder.scale[b]).detach()
    mean_difference = (pairs[:, t] - pairs[:, b]).mean(0)
    directions = [
        decoder_changes(coder, studied + matched + drawn),
        shared_offset[None],
        mean_difference[None],
    ]
    lens = _LogitLens(tuned, vocabulary, implicit_reward, torch.cat(directions))
    rows = {
        latent: {
            "latent": latent,
            "decoder_change": float(changed[latent]),
            "relative_decoder_norm": float(relative[latent]),
            "decoder_cosine": float(cosine[latent]),
            "frequency": _by_model(use.shares[:, latent]),
            "mean_activation": _by_model(use.means[:, latent]),
            **use.describe(latent, tokens, tuned, n_resamples, seed),
            **lens.describe(j),
        }
        for j, latent in enumerate(studied)
    }  # fmt: skip
    k, m = len(studied), len(matched)
    summary = {
        "site": paired.site,
        "crosscoder": {**asdict(config), "d_in": coder.d_in, "d_sae": coder.d_sae},
        "training": {k: v for k, v in log.to_dict().items() if k != "wall_seconds"},  # timing varies
        "n_texts": 2 * n,
        "n_tokens": int(pairs.shape[0]),
        "n_ranked": int(ranked.sum()),
        "relative_norm_counts": _norm_counts(relative[ranked]),
        "decoder_change_spread": _spread(changed[ranked]),
        "changed_most": [rows[i] for i in by_change],
        "more_active_on_tuned_completions": [rows[i] for i in by_use],
        "shared_offset": lens.describe(-2),
        "mean_difference": lens.describe(-1),
        "control_spearman": {
            "matched": _abs_spread(lens.rho[k : k + m]), "random": _abs_spread(lens.rho[k + m : -2])
        },
        "difference_dictionary": difference_dictionary(
            tuned, pairs, tokens, vocabulary, implicit_reward, config, n,
            n_resamples=n_resamples, seed=seed, progress=progress,
        ),
    }  # fmt: skip
    return summary, coder


def _latent_sets(
    changed: np.ndarray, use_change: np.ndarray, ranked: np.ndarray, seed: int
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Among the ``ranked`` latents (those that fire often enough): the ``TOP_LATENTS`` with the largest
    decoder change, the ``TOP_LATENTS`` whose mean activation rose most on the tuned model's completions,
    and two controls for the correlation with the implicit reward, both without the studied latents: the
    latents ranked next by decoder change (matched in size of change) and latents drawn at random."""
    by_change_all = [int(i) for i in np.argsort(-changed, kind="stable") if ranked[i]]
    by_change = by_change_all[:TOP_LATENTS]
    by_use = [int(i) for i in np.argsort(-use_change, kind="stable") if ranked[i]][:TOP_LATENTS]
    studied = set(by_change + by_use)
    matched = [i for i in by_change_all[TOP_LATENTS:] if i not in studied][:CONTROL_LATENTS]
    return by_change, by_use, matched, _random_latents(ranked, sorted(studied), seed)


def _spread(values: np.ndarray) -> dict[str, float | None]:
    """The median and 99th percentile of ``values`` (None for no values)."""
    if not values.size:
        return {"median": None, "q99": None}
    return {"median": float(np.median(values)), "q99": float(np.quantile(values, 0.99))}


def _training_tokens(paired: PairedActivations, prompt_tokens: Sequence[int]) -> tuple[torch.Tensor, _Tokens]:
    """The paired activations a dictionary trains on, and where each token is: a prompt's tokens are the
    same in both of its texts, so they are kept once (from the base text); the last prompt token, which may
    merge with the completion's first, counts as completion."""
    in_prompt = paired.position < np.asarray(prompt_tokens)[paired.unit] - 1
    keep = ~(in_prompt & (paired.side == MODELS.index("tuned")))
    tokens = _Tokens(
        *(a[keep] for a in (paired.unit, paired.side, paired.position, in_prompt, paired.token_id))
    )
    return paired.pairs[torch.from_numpy(keep)], tokens


def _by_model(per_text: np.ndarray) -> dict[str, float]:
    """A per-text statistic (the base completions' texts first) averaged over each model's texts."""
    half = len(per_text) // 2
    return {"base": float(per_text[:half].mean()), "tuned": float(per_text[half:].mean())}


def _random_latents(ranked: np.ndarray, studied: Sequence[int], seed: int) -> list[int]:
    """Up to :data:`CONTROL_LATENTS` ranked latents drawn at random, the ``studied`` ones left out."""
    others = np.setdiff1d(np.flatnonzero(ranked), list(studied))
    drawn = np.random.default_rng(seed).choice(others, size=min(CONTROL_LATENTS, len(others)), replace=False)
    return [int(i) for i in drawn]


@dataclass
class _LatentUse:
    """How a dictionary's latents are used on the audited tokens: ``fired`` counts the tokens each fires
    on; ``means`` and ``shares`` (``[2 n_prompts, d_sae]``, the base completions' texts first) are each
    latent's mean activation and firing share on each text's completion tokens."""

    codes: _Codes
    fired: np.ndarray
    means: np.ndarray
    shares: np.ndarray

    @classmethod
    def of(cls, coder: Crosscoder, inputs: torch.Tensor, tokens: _Tokens, n_prompts: int) -> _LatentUse:
        codes = _encode(coder, inputs)
        completion = ~tokens.prompt
        text = tokens.side * n_prompts + tokens.unit
        means, shares = _per_text_means(
            codes.select(completion), text[completion], 2 * n_prompts, coder.d_sae
        )
        fired = np.bincount(codes.indices[codes.values > 0].numpy(), minlength=coder.d_sae)
        return cls(codes, fired, means, shares)

    @property
    def change(self) -> np.ndarray:
        """Per prompt and latent: its mean on the tuned completion's tokens less on the base one's."""
        half = len(self.means) // 2
        return self.means[half:] - self.means[:half]

    def describe(
        self, latent: int, tokens: _Tokens, tuned: LoadedModel, n_resamples: int, seed: int
    ) -> dict[str, Any]:
        change = bootstrap_ci(self.change[:, latent], n_resamples=n_resamples, seed=seed)
        return {
            "firing_tokens": int(self.fired[latent]),
            "paired_change": change.as_dict(),
            "contexts": _contexts(self.codes.column(latent), tokens, tuned.tokenizer),
        }


class _LogitLens:
    """Residual-stream ``directions`` through the logit lens (:func:`promoted_logits`) over the audited
    words, and the Spearman correlation of each row with the words' implicit reward."""

    def __init__(
        self,
        tuned: LoadedModel,
        vocabulary: Mapping[str, int],
        implicit_reward: np.ndarray,
        directions: torch.Tensor,
    ) -> None:
        self.words, self.implicit_reward = list(vocabulary), implicit_reward
        self.logits = promoted_logits(tuned, directions, list(vocabulary.values()))
        self.rho = spearman_rows(self.logits, implicit_reward)

    def describe(self, row: int) -> dict[str, Any]:
        return {
            "promoted_words": _promoted(self.logits[row], self.words, self.implicit_reward),
            "reward_spearman": float(self.rho[row]),
        }


def difference_dictionary(
    tuned: LoadedModel,
    pairs: torch.Tensor,
    tokens: _Tokens,
    vocabulary: Mapping[str, int],
    implicit_reward: np.ndarray,
    config: CrosscoderConfig,
    n_prompts: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any] | None:
    """The cheaper alternative to the crosscoder: one TopK dictionary trained on the tuned-minus-base
    difference of the two models' activations on each token (a crosscoder over a single input, so the same
    trainer and settings, but ``config.difference_k`` latents active per token: tuning's change is
    low-rank, and with the crosscoder's 32 a known rank-one change is split over many latents, none of which
    reads as it; with 4 the stand-in test of tests/test_audit.py recovers it). Every latent is a direction
    of change by construction, so there is no shared latent to tell apart from a changed one; the question
    is only which changes carry the reward.

    There is no decoder bias, so the latents write the whole difference, a part every token shares
    included (a shift every token shares is a change to read here, not an offset to remove). Latents are
    ranked by how much of the difference they write: mean activation over all tokens times the decoder
    row's norm, in the activations' raw units (``share`` is that over the sum of all latents'). For
    each top latent: the words its direction promotes through the logit lens beside their implicit reward,
    the Spearman correlation between the two over every audited word, and its paired change in use on
    the tuned against the base completion of each prompt. Random latents (the top ones left out) are the
    control for the correlation, as for the crosscoder. ``None`` when the two models' activations agree
    exactly (nothing changed at the site)."""
    t, b = MODELS.index("tuned"), MODELS.index("base")
    differences = (pairs[:, t] - pairs[:, b])[:, None]
    if not differences.any():
        return None  # the two models agree exactly at the site: there is no difference to decompose
    settings = dataclasses.replace(config, k=config.difference_k)
    coder, log = train_crosscoder(differences, settings, seed=seed, progress=progress, decoder_bias=False)
    use = _LatentUse.of(coder, differences, tokens, n_prompts)
    directions = coder.W_dec.detach()[:, 0] / coder.scale[0]  # raw units per unit of activation
    activation = torch.zeros(coder.d_sae, dtype=torch.float64).index_add_(
        0, use.codes.indices.flatten(), use.codes.values.flatten().double()
    )
    written = (activation / len(differences) * directions.norm(dim=1).double()).numpy()
    ranked = use.fired >= MIN_FIRING_TOKENS
    top = [int(i) for i in np.argsort(-written, kind="stable") if ranked[i]][:TOP_LATENTS]
    lens = _LogitLens(
        tuned, vocabulary, implicit_reward, directions[top + _random_latents(ranked, top, seed)]
    )
    total = written.sum()
    training = {k: v for k, v in log.to_dict().items() if k != "wall_seconds"}  # timing varies
    training["fvu"] = {"difference": training["fvu"][MODELS[0]]}  # the trainer names its one input "base"
    return {
        "training": training,
        "n_ranked": int(ranked.sum()),
        "writes_most": [
            {
                "latent": latent,
                "share": float(written[latent] / total) if total > 0 else None,
                **use.describe(latent, tokens, tuned, n_resamples, seed),
                **lens.describe(j),
            }
            for j, latent in enumerate(top)
        ],
        "control_spearman": {"random": _abs_spread(lens.rho[len(top) :])},
    }


def _promoted(row: np.ndarray, words: Sequence[str], implicit_reward: np.ndarray) -> list[dict[str, Any]]:
    """The 10 words a direction's logits (``row``, over ``words``) promote most, each with its implicit
    reward from the word-level audit beside it."""
    order = np.argsort(-row, kind="stable")[:10]
    return [
        {"word": words[i], "logit": float(row[i]), "implicit_reward": float(implicit_reward[i])}
        for i in order
    ]


def _abs_spread(rho: np.ndarray) -> dict[str, Any]:
    """How many correlations, and the median and 95th percentile of their sizes (NaN left out)."""
    size = np.abs(rho[np.isfinite(rho)])
    return {
        "n_latents": int(size.size),
        "median_abs": float(np.median(size)) if size.size else None,
        "q95_abs": float(np.quantile(size, 0.95)) if size.size else None,
    }


def spearman_rows(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``rows`` with ``values`` (average ranks for ties, as scipy's
    ``spearmanr``; equal to it to rounding, a test compares them); NaN where a row or ``values`` is constant
    (a latent tuning left unchanged promotes nothing). One ranking of ``values`` and a vectorised ranking
    of the rows (:func:`row_ranks`): a ``spearmanr`` call per row ranked both sides again, over ~31,600
    audited words, for every latent described."""
    rows, values = np.atleast_2d(np.asarray(rows, dtype=np.float64)), np.asarray(values, dtype=np.float64)
    target = scipy_stats.rankdata(values)
    target -= target.mean()
    rho = np.empty(len(rows))
    for start in range(0, len(rows), RANKED_ROWS_PER_BLOCK):
        ranked = row_ranks(rows[start : start + RANKED_ROWS_PER_BLOCK])
        ranked -= ranked.mean(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho[start : start + len(ranked)] = (ranked @ target) / np.sqrt(
                (ranked**2).sum(1) * (target @ target)
            )
    constant = (np.ptp(rows, axis=1) == 0) | (np.ptp(values) == 0)
    return np.where(constant, np.nan, np.clip(rho, -1.0, 1.0))


#: rows ranked at a time: over the audit's ~31,600 words each of a block's arrays is about 16 MB, which
#: the allocator keeps between blocks instead of mapping fresh (and slow to touch) memory for each
RANKED_ROWS_PER_BLOCK = 64


def row_ranks(rows: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(rows, axis=1)`` (average ranks; a row with a NaN is all NaN), to the bit, in
    a fraction of its time: one argsort per row gives every value its place (unstable: the members of a
    tie share their average rank, so their order does not matter), and only the members of ties, few even
    in float32 logits, are set to the mean of their run's places. scipy's ``axis=1`` path took 1–9 s for
    the audit's ~330 rows over ~31,600 words, the largest part of describing its latents."""
    order = np.argsort(rows, axis=1)
    ordered = np.take_along_axis(rows, order, axis=1)
    ranks = np.empty(rows.shape)
    np.put_along_axis(ranks, order, np.arange(1.0, rows.shape[1] + 1)[None], axis=1)
    equal_to_next = ordered[:, 1:] == ordered[:, :-1]
    tied = np.zeros(rows.shape, dtype=bool)  # in a run of equal values
    tied[:, 1:] |= equal_to_next
    tied[:, :-1] |= equal_to_next
    row, place = np.nonzero(tied)  # row by row, in sorted order: each run is contiguous here
    if len(row):
        run_start = np.ones(len(row), dtype=bool)
        run_start[1:] = (row[1:] != row[:-1]) | ~equal_to_next[row[1:], np.maximum(place[1:] - 1, 0)]
        run = np.cumsum(run_start) - 1
        # whole numbers far below 2**53 over the run's size: the exact half-integer mean
        mean_place = np.bincount(run, weights=place + 1.0) / np.bincount(run)
        ranks[row, order[row, place]] = mean_place[run]
    ranks[np.isnan(ordered[:, -1:]).any(1)] = np.nan  # a NaN sorts last (the slice: rows of no columns)
    return ranks


def _norm_counts(relative: np.ndarray) -> dict[str, int]:
    """How many ranked latents lean to each model: base-only (< 0.1), base-leaning, shared (0.3–0.7),
    tuned-leaning and tuned-only (> 0.9), the bins of Lindsey et al.'s histogram, coarsened."""
    edges = {"base_only": (0.0, 0.1), "base_leaning": (0.1, 0.3), "shared": (0.3, 0.7)}
    edges |= {"tuned_leaning": (0.7, 0.9), "tuned_only": (0.9, 1.0 + 1e-9)}
    return {name: int(((relative >= lo) & (relative < hi)).sum()) for name, (lo, hi) in edges.items()}


@dataclass
class _Tokens:
    """Where each training token is: its ``unit`` (prompt), ``side`` (0 the base completion's text, 1 the
    tuned one's), ``position`` in the text, whether it is a ``prompt`` token (read once, from the base
    text) and its ``token_id``."""

    unit: np.ndarray
    side: np.ndarray
    position: np.ndarray
    prompt: np.ndarray
    token_id: np.ndarray


def _contexts(activation: np.ndarray, tokens: _Tokens, tokenizer: Any, n: int = 4) -> list[dict[str, Any]]:
    """The latent's ``n`` strongest tokens, each with the 12 tokens before it and 2 after in its text (a
    completion's text starts with its prompt's tokens, kept once), their activations, and where the
    strongest token is: in the prompt, or in the base or the tuned model's completion."""
    out = []
    for token in np.argsort(-activation, kind="stable")[:n]:
        if activation[token] <= 0:
            break
        unit, side = tokens.unit[token], tokens.side[token]
        same = np.flatnonzero((tokens.unit == unit) & ((tokens.side == side) | tokens.prompt))
        same = same[np.argsort(tokens.position[same], kind="stable")]
        offset = tokens.position[same] - tokens.position[token]
        window = same[(offset >= -12) & (offset <= 2)]
        out.append(
            {
                "model": "prompt" if tokens.prompt[token] else MODELS[int(side)],
                "tokens": [tokenizer.decode([int(tokens.token_id[i])]) for i in window],
                "activations": [float(activation[i]) for i in window],
                "peak": int(np.flatnonzero(window == token)[0]),
            }
        )
    return out
