"""The mean-pooled residual stream of a text: the read-out the probes, inverse RL and a read-out reward
share, so a reward fitted on stored read-outs scores new texts on exactly the same features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from irmscope.models.adapters import site_name
from irmscope.models.generation import batches
from irmscope.models.hooks import capture_activations
from irmscope.models.loading import LoadedModel


def pooling_weights(mask: torch.Tensor) -> torch.Tensor:
    """``[batch, seq]`` weights that average each row's real tokens with the first left out (an attention
    sink with an outsized norm), unless it is the row's only token. Either padding side."""
    weights = mask.clone().float()
    rows, first = torch.arange(len(mask)), mask.float().argmax(1)
    weights[rows, first] = weights[rows, first] * (mask.sum(1) == 1)
    return weights / weights.sum(1, keepdim=True)


@torch.no_grad()
def mean_pooled_residual(
    lm: LoadedModel, texts: Sequence[str], layer: int, max_length: int | None = 128, batch_size: int = 16
) -> np.ndarray:
    """``[len(texts), width]``: each text's residual stream leaving block ``layer``, averaged over its tokens
    by :func:`pooling_weights` (texts tokenised without special tokens, right-padded as the probes' read-outs
    are, and cut to ``max_length``)."""
    site = site_name(layer % lm.n_layers, "hook_resid_post")
    device = next(lm.model.parameters()).device
    rows = []
    for _, chunk in batches(texts, size=batch_size):
        enc = lm.tokenizer(
            list(chunk),
            return_tensors="pt",
            padding=True,
            padding_side="right",
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=False,
        ).to(device)
        acts = capture_activations(lm.model, [site], enc["input_ids"], enc["attention_mask"])[site].float()
        weights = pooling_weights(enc["attention_mask"]).to(acts.device)
        rows.append(torch.einsum("bsd,bs->bd", acts, weights).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, lm.model.config.hidden_size))
