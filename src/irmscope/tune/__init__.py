"""Making and evaluating subjects: fine-tuning against a known reward (TRL), sampling, evaluation,
and per-layer parameter divergence."""

from irmscope.tune.divergence import layer_divergence, top_layers
from irmscope.tune.evaluate import completion_statistics, evaluate_policy
from irmscope.tune.sampling import generate_amplified, generate_completions
from irmscope.tune.trainer import MANIFEST, TunedModel, tune_model

__all__ = [
    "MANIFEST",
    "TunedModel",
    "completion_statistics",
    "evaluate_policy",
    "generate_amplified",
    "generate_completions",
    "layer_divergence",
    "top_layers",
    "tune_model",
]
