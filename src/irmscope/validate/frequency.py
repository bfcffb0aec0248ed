"""The paper's Table 6 (§5.2): do the features classified as reward-related fire where R predicts reward?

``R`` (the IRM regression of :mod:`irmscope.elicit.irm`) is applied to every token of an unseen corpus: the
concatenated SAE features of the studied sites. The pipeline passes a store of reviews read by nothing
else (the activations stage's ``table6`` part): counted on the texts whose top contexts chose the related
features, they would fire there by construction. On the tokens where R's raw output exceeds a threshold
(3, as the paper) we measure how often each related feature is active, averaged over the related
features, against the same average over every feature of the dictionaries. The same frequencies over
*all* tokens sit beside them: a feature that fires everywhere is no evidence.

The threshold is in the units ``R`` outputs, those of its training targets (see
:func:`irmscope.elicit.irm.training_rows`): for ``faithful`` and ``ridge-delta`` (the pipeline's two rows)
the sentiment activation deltas scaled so that the largest training delta is 4, for ``ridge-value`` the
lexicon's own values. It is *not* the [-4, 4] scale of the reconstructed lexicon, which rescales R's
predictions on the evaluated words afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from irmscope.activations import ActivationStore
from irmscope.errors import IrmscopeError
from irmscope.sae.model import SAE


def _site_latents(sae: SAE, store: ActivationStore, site: str) -> np.ndarray:
    with torch.no_grad():
        return sae.encode(store.read_all(site).to(sae.W_dec.device)).double().cpu().numpy()


def activation_frequency_table(
    saes: Mapping[str, SAE],
    store: ActivationStore,
    coef: np.ndarray,
    intercept: float,
    related: Mapping[str, Sequence[int]],
    threshold: float = 3.0,
) -> dict[str, Any]:
    """Table 6 for one regression ``R(x) = coef · x + intercept`` over the sites of ``saes`` (in order)."""
    latents = {site: _site_latents(sae, store, site) for site, sae in saes.items()}
    X = np.concatenate(list(latents.values()), axis=1)
    if X.shape[1] != len(coef):
        raise IrmscopeError(
            f"R has {len(coef)} coefficients but the SAEs give {X.shape[1]} features; they must match"
        )
    predicted = X @ coef + intercept
    selected = predicted > threshold
    active = {site: values > 0 for site, values in latents.items()}

    def mean_frequency(rows: np.ndarray, only_related: bool) -> float:
        if not rows.any():  # no token there: undefined, not a warning about an empty mean
            return float("nan")
        freqs = []
        for site, on in active.items():
            columns = list(related.get(site, [])) if only_related else slice(None)
            if only_related and not columns:
                continue
            freqs.append(on[rows][:, columns].mean(axis=0))
        return float(np.concatenate(freqs).mean()) if freqs else float("nan")

    everything = np.ones(len(X), dtype=bool)
    return {
        "threshold": threshold,
        "n_tokens": len(X),
        "n_tokens_above_threshold": int(selected.sum()),
        "related_features": int(sum(len(f) for f in related.values())),
        "frequency_related_above": mean_frequency(selected, True),
        "frequency_all_above": mean_frequency(selected, False),
        "frequency_related_everywhere": mean_frequency(everything, True),
        "frequency_all_everywhere": mean_frequency(everything, False),
        "prediction_quantiles": {q: float(np.quantile(predicted, float(q))) for q in ("0.01", "0.5", "0.99")},
    }
