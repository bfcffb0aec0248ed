"""The paper's feature classification (§4.4, Appendix E.1 steps 4-6), for one model's SAEs.

At each studied site two dictionaries of different sizes were trained on the same activations; the
top-k features of the smaller one best matched (by decoder cosine) in the larger are the ones "likely to be
present in the model". Each is explained from its top-activating contexts on held-out text, then classified
as related to the training reward or not, given the reward's description.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from irmscope.activations import ActivationStore
from irmscope.interpret.evidence import feature_evidence, token_values
from irmscope.interpret.explainers import Explainer
from irmscope.sae.compare import top_shared_features
from irmscope.sae.model import SAE


def interpret_features(
    saes: Mapping[str, SAE],
    pair_saes: Mapping[str, SAE],
    *,
    store: ActivationStore,
    tokenizer,
    lexicon: Mapping[str, float] | None,
    reward_description: str,
    explainer: Explainer,
    top_k: int = 10,
    n_contexts: int = 8,
) -> dict[str, Any]:
    """Explain and classify the top-``top_k`` shared features of every site.

    ``lexicon`` (the reward's word values, if it has them) gives each feature its measured link to the
    reward. Returns a JSON-ready dict with one record per feature and the related features per site.
    """
    values = token_values(tokenizer, lexicon) if lexicon is not None else None
    records: list[dict[str, Any]] = []
    for site, sae in saes.items():
        shared = top_shared_features(sae, pair_saes[site], top_k)
        evidence = feature_evidence(
            sae,
            store,
            site,
            features=shared.index_1,
            tokenizer=tokenizer,
            values_by_token=values,
            n_contexts=n_contexts,
        )
        for item, index_2, cosine in zip(evidence, shared.index_2, shared.cosine, strict=True):
            description = explainer.explain(item)
            records.append(
                {
                    **item.to_dict(),
                    "pair_feature": index_2,
                    "pair_cosine": cosine,
                    "description": description,
                    "related": explainer.is_related(description, item, reward_description),
                }
            )
    related = {site: [r["feature"] for r in records if r["site"] == site and r["related"]] for site in saes}
    shares = [r["reward_word_share"] for r in records]
    return {
        "explainer": explainer.label,
        "top_k": top_k,
        "features": records,
        "related": related,
        "n_related": sum(len(v) for v in related.values()),
        "n_explained": len(records),
        "mean_reward_word_share": float(np.mean(shares)) if shares else float("nan"),
    }
