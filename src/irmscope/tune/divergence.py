"""Per-layer parameter divergence between a base and a tuned model (the paper's §4.2 and Appendix G).

The divergence of layer L is the sum, over the layer's parameter tensors, of the L2 (Frobenius) norm of
the difference between tuned and base weights. The paper fixes its five highest-divergence layers for SAE
training.
"""

from __future__ import annotations

import torch

from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel


@torch.no_grad()
def layer_divergence(base: LoadedModel, tuned: LoadedModel) -> dict[str, float]:
    """``{"layer 0": d0, ..., "other": d_rest}``: summed L2 distances of each block's tensors, and of the
    parameters outside the blocks (embeddings, final norm)."""
    base_params = dict(base.model.named_parameters())
    tuned_params = dict(tuned.model.named_parameters())
    if base_params.keys() != tuned_params.keys():
        raise IrmscopeError(
            "base and tuned models have different parameters; compare a model with its own base"
        )
    prefix = base.adapter.layers + "."
    out = {f"layer {i}": 0.0 for i in range(base.n_layers)}
    out["other"] = 0.0
    for name, weight in base_params.items():
        distance = float(torch.linalg.vector_norm(tuned_params[name].float() - weight.float()))
        if name.startswith(prefix):
            out[f"layer {int(name[len(prefix) :].split('.')[0])}"] += distance
        else:
            out["other"] += distance
    return out


def top_layers(divergence: dict[str, float], n: int = 5) -> list[int]:
    """The ``n`` layers with the highest divergence, most divergent first."""
    layers = [(value, int(key.split()[1])) for key, value in divergence.items() if key.startswith("layer ")]
    return [layer for _, layer in sorted(layers, reverse=True)[:n]]
