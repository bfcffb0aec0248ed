"""What an explainer sees of one SAE feature: its top-activating contexts and how it relates to the reward.

The evidence comes from an activation cache of text the SAE never trained on (the pipeline's held-out
reviews): every cached token is encoded by the SAE, and for each studied feature we keep

* its **top-activating contexts**: the tokens before (and a few after) each of its strongest activations,
  with the feature's activation on every token of the window (what a dashboard colours and what the
  explainer of Bills et al. (2023), which the paper adapts, reads);
* its **top tokens**: the tokens it fires on most, by summed activation;
* its **firing frequency**: the share of tokens it is active on;
* two links to the *known* reward, per token: the Pearson correlation between the feature's activation
  and the reward value of the token (a lexicon word's value, 0 for other tokens), and the share of its top
  contexts that peak on a token the reward scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from irmscope.activations import ActivationStore
from irmscope.activations.store import META_KEYS
from irmscope.errors import IrmscopeError
from irmscope.sae.model import SAE


@dataclass
class Context:
    """A window of tokens around one of the feature's strong activations; ``peak`` indexes the maximum."""

    tokens: list[str]
    activations: list[float]
    peak: int


@dataclass
class FeatureEvidence:
    """Everything irmscope knows about one feature before anyone explains it."""

    site: str
    feature: int
    frequency: float
    max_activation: float
    top_tokens: list[tuple[str, float]] = field(default_factory=list)  # token, summed activation
    contexts: list[Context] = field(default_factory=list)
    reward_correlation: float = float("nan")
    reward_word_share: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def token_values(tokenizer, lexicon: Mapping[str, float]) -> np.ndarray:
    """The reward value of every vocabulary token: the lexicon value of the word it spells (stripped of
    its leading space, case-insensitively), 0 for tokens that are not lexicon words."""
    folded = {word.lower(): float(value) for word, value in lexicon.items()}
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    values = np.zeros(size)
    for token_id, piece in enumerate(pieces):
        if piece is None:
            continue
        word = tokenizer.convert_tokens_to_string([piece]).strip().lower()
        values[token_id] = folded.get(word, 0.0)
    return values


def _site_rows(store: ActivationStore, site: str) -> dict[str, torch.Tensor]:
    shards = [store.load_shard(i, [site, *META_KEYS]) for i in range(len(store.shards))]
    if not shards:
        raise IrmscopeError(f"the activation cache at {store.root} holds no shards yet; finish caching first")
    return {key: torch.cat([s[key] for s in shards]) for key in (site, *META_KEYS)}


def feature_evidence(
    sae: SAE,
    store: ActivationStore,
    site: str,
    *,
    features: Sequence[int],
    tokenizer,
    values_by_token: np.ndarray | None = None,
    n_contexts: int = 8,
    n_top_tokens: int = 10,
    window_before: int = 12,
    window_after: int = 3,
) -> list[FeatureEvidence]:
    """Evidence for each of ``features`` of ``sae`` from the cached ``site`` (positions ``"all"``).

    ``values_by_token`` (from :func:`token_values`) links features to the known reward; without it the
    reward fields stay NaN / 0.
    """
    if store.manifest.get("positions") != "all":
        raise IrmscopeError("feature evidence needs a cache of every token (positions='all')")
    rows = _site_rows(store, site)
    with torch.no_grad():
        latents = sae.encode(rows[site].to(sae.W_dec.device))[:, list(features)].double().cpu().numpy()
    token_ids = rows["token_ids"].numpy()
    text_index = rows["text_index"].numpy()
    position = rows["position"].numpy()
    # Row of (text, position) -> cache row, to rebuild the window around a peak.
    row_of = {(int(t), int(p)): i for i, (t, p) in enumerate(zip(text_index, position, strict=True))}
    pieces = tokenizer.convert_ids_to_tokens(token_ids.tolist())
    strings = [tokenizer.convert_tokens_to_string([p]) for p in pieces]
    reward = values_by_token[token_ids] if values_by_token is not None else None
    out = []
    for column, feature in enumerate(features):
        acts = latents[:, column]
        active = acts > 0
        order = np.argsort(-acts, kind="stable")
        contexts, peak_rows, seen_texts = [], [], set()
        for row in order:
            if acts[row] <= 0 or len(contexts) == n_contexts:
                break
            text, pos = int(text_index[row]), int(position[row])
            if text in seen_texts:  # one context per text, so a repeated phrase does not fill the list
                continue
            seen_texts.add(text)
            peak_rows.append(int(row))
            window = [
                row_of[(text, p)]
                for p in range(pos - window_before, pos + window_after + 1)
                if (text, p) in row_of
            ]
            contexts.append(
                Context(
                    tokens=[strings[i] for i in window],
                    activations=[round(float(acts[i]), 4) for i in window],
                    peak=window.index(int(row)),
                )
            )
        summed: dict[str, float] = {}
        for row in np.flatnonzero(active):
            key = strings[row].strip() or strings[row]
            summed[key] = summed.get(key, 0.0) + float(acts[row])
        top = sorted(summed.items(), key=lambda kv: -kv[1])[:n_top_tokens]
        evidence = FeatureEvidence(
            site=site,
            feature=int(feature),
            frequency=float(active.mean()),
            max_activation=float(acts.max()),
            top_tokens=[(token, round(total, 3)) for token, total in top],
            contexts=contexts,
        )
        if reward is not None:
            evidence.reward_correlation = _pearson(acts, reward)
            evidence.reward_word_share = (
                float(np.mean([reward[row] != 0 for row in peak_rows])) if peak_rows else 0.0
            )
        out.append(evidence)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
