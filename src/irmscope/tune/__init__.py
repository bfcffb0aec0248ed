"""Making and evaluating subjects: fine-tuning against a known reward (TRL), evaluation, and per-layer
parameter divergence. Sampling lives in :mod:`irmscope.models.generation`."""

from irmscope.tune.divergence import layer_divergence, top_layers
from irmscope.tune.evaluate import evaluate_models, evaluate_policy
from irmscope.tune.trainer import MANIFEST, TunedModel, tune_model, tune_on_reviews

__all__ = [
    "MANIFEST",
    "TunedModel",
    "evaluate_models",
    "evaluate_policy",
    "layer_divergence",
    "top_layers",
    "tune_model",
    "tune_on_reviews",
]
