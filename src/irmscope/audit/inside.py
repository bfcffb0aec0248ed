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
* its **firing frequency and mean activation on each model's own completions**, and the per-prompt paired
  difference (tuned completion − base completion of the same prompt) with a bootstrap interval over prompts:
  a latent the tuned model's own text uses more;
* the **words its change promotes**: its tuned decoder row less its base row (what tuning changed in its
  output) read through the tuned model's final norm scale and unembedding (the logit lens), beside each
  word's relative shift from the word-level audit, and the Spearman correlation between the two over every
  audited word. The control for that correlation is the same statistic for randomly drawn latents of the
  same dictionary.

The site is the residual stream after the block whose parameters tuning moved most
(:func:`~irmscope.tune.layer_divergence`, the paper's §4.2 criterion), unless one is given. The first
token of every text is left out (an attention sink's activations would own the reconstruction).
"""

from __future__ import annotations

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


def promoted_logits(coder: Crosscoder, tuned: LoadedModel, latents: Sequence[int], token_ids: Sequence[int]):
    """``[len(latents), len(token_ids)]``: the logit that what tuning changed in each latent's output (its
    tuned decoder row less its base row, in raw units) adds to each token through the tuned model's final
    norm scale and unembedding (the logit lens). For a tuned-only latent that is its whole output; for a
    shared latent it is the part tuning added, not the part both models write."""
    tuned_row, base_row = (
        coder.W_dec.detach()[list(latents), MODELS.index(m)] / coder.scale[MODELS.index(m)]
        for m in ("tuned", "base")
    )
    directions = tuned_row - base_row
    norm = tuned.adapter.final_norm_module(tuned.model)
    scale = getattr(norm, "weight", None)
    if scale is not None:
        directions = directions * scale.detach().float()
    unembedding = tuned.model.get_output_embeddings().weight.detach().float()[list(token_ids)]
    return (directions @ unembedding.T).numpy()


def model_diff(
    tuned: LoadedModel,
    paired: PairedActivations,
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
    ``vocabulary`` maps the audited words to their token ids, ``implicit_reward`` is their value from the
    word-level audit (relative shift beyond the drift), in the same order; ``tuned`` gives the unembedding.

    Returns the JSON-ready description and the crosscoder."""
    n = int(paired.unit.max()) + 1
    text = paired.text * n + paired.unit  # the base completions' texts first, then the tuned ones'
    coder, log = train_crosscoder(paired.pairs, config, seed=seed, progress=progress)
    codes = _encode(coder, paired.pairs)
    means, shares = _per_text_means(codes, text, 2 * n, coder.d_sae)
    fired = np.bincount(codes.indices[codes.values > 0].numpy(), minlength=coder.d_sae)
    relative = coder.relative_decoder_norm(MODELS.index("tuned"))
    changed = coder.decoder_change(MODELS.index("tuned"), MODELS.index("base"))
    cosine = coder.decoder_cosine()
    change = means[n:] - means[:n]  # per prompt: tuned completion's text − base completion's text
    ranked = fired >= MIN_FIRING_TOKENS
    by_change = [int(i) for i in np.argsort(-changed, kind="stable") if ranked[i]][:TOP_LATENTS]
    by_use = [int(i) for i in np.argsort(-change.mean(0), kind="stable") if ranked[i]][:TOP_LATENTS]
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(ranked)
    control = rng.choice(candidates, size=min(CONTROL_LATENTS, len(candidates)), replace=False).tolist()
    studied = list(dict.fromkeys(by_change + by_use))
    words = list(vocabulary)
    logits = promoted_logits(coder, tuned, studied + control, list(vocabulary.values()))
    rho = np.array([_spearman(row, implicit_reward) for row in logits])
    link = dict(zip(studied, rho[: len(studied)], strict=True))
    control_rho = np.abs(rho[len(studied) :])
    control_rho = control_rho[np.isfinite(control_rho)]

    def describe(latent: int, row: np.ndarray) -> dict[str, Any]:
        order = np.argsort(-row, kind="stable")[:10]
        return {
            "latent": latent,
            "decoder_change": float(changed[latent]),
            "relative_decoder_norm": float(relative[latent]),
            "decoder_cosine": float(cosine[latent]),
            "firing_tokens": int(fired[latent]),
            "frequency": {
                "base": float(shares[:n, latent].mean()),
                "tuned": float(shares[n:, latent].mean()),
            },
            "mean_activation": {
                "base": float(means[:n, latent].mean()),
                "tuned": float(means[n:, latent].mean()),
            },
            "paired_change": bootstrap_ci(change[:, latent], n_resamples=n_resamples, seed=seed).as_dict(),
            "promoted_words": [
                {"word": words[i], "logit": float(row[i]), "implicit_reward": float(implicit_reward[i])}
                for i in order
            ],
            "reward_spearman": float(link[latent]),
            "contexts": _contexts(codes.column(latent), paired, text, tuned.tokenizer),
        }

    rows = {latent: describe(latent, logits[j]) for j, latent in enumerate(studied)}
    summary = {
        "site": paired.site,
        "crosscoder": {**asdict(config), "d_in": coder.d_in, "d_sae": coder.d_sae},
        "training": {k: v for k, v in log.to_dict().items() if k != "wall_seconds"},  # timing varies
        "n_texts": 2 * n,
        "n_tokens": int(paired.pairs.shape[0]),
        "n_ranked": int(ranked.sum()),
        "relative_norm_counts": _norm_counts(relative[ranked]),
        "changed_most": [rows[i] for i in by_change],
        "more_used_after_tuning": [rows[i] for i in by_use],
        "control_spearman": {
            "n_latents": len(control_rho),
            "median_abs": float(np.median(control_rho)) if len(control_rho) else None,
            "q95_abs": float(np.quantile(control_rho, 0.95)) if len(control_rho) else None,
        },
    }
    return summary, coder


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; NaN when either side is constant (a latent tuning left unchanged promotes nothing)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(scipy_stats.spearmanr(a, b).statistic)


def _norm_counts(relative: np.ndarray) -> dict[str, int]:
    """How many ranked latents lean to each model: base-only (< 0.1), base-leaning, shared (0.3–0.7),
    tuned-leaning and tuned-only (> 0.9), the bins of Lindsey et al.'s histogram, coarsened."""
    edges = {"base_only": (0.0, 0.1), "base_leaning": (0.1, 0.3), "shared": (0.3, 0.7)}
    edges |= {"tuned_leaning": (0.7, 0.9), "tuned_only": (0.9, 1.0 + 1e-9)}
    return {name: int(((relative >= lo) & (relative < hi)).sum()) for name, (lo, hi) in edges.items()}


def _contexts(
    activation: np.ndarray, paired: PairedActivations, text: np.ndarray, tokenizer: Any, n: int = 4
) -> list[dict[str, Any]]:
    """The latent's ``n`` strongest tokens, each with the 12 tokens before it and 2 after in its ``text``,
    their activations, and whose completion the text holds."""
    out = []
    for token in np.argsort(-activation, kind="stable")[:n]:
        if activation[token] <= 0:
            break
        same = np.flatnonzero(text == text[token])
        offset = paired.position[same] - paired.position[token]
        window = same[(offset >= -12) & (offset <= 2)]
        out.append(
            {
                "model": MODELS[int(paired.text[token])],
                "tokens": [tokenizer.decode([int(paired.token_id[i])]) for i in window],
                "activations": [float(activation[i]) for i in window],
                "peak": int(np.flatnonzero(window == token)[0]),
            }
        )
    return out
