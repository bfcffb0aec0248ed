"""Models: loading (packaged, tiny, local, hub), hook-site adapters, hooks to read or rewrite sites, and
batched sampling and scoring of completions."""

from irmscope.models.adapters import (
    ADAPTERS,
    SITE_KINDS,
    ArchitectureAdapter,
    adapter_for,
    parse_site,
    site_name,
)
from irmscope.models.generation import (
    Sampling,
    batches,
    generate_amplified,
    generate_completions,
)
from irmscope.models.hooks import (
    Capture,
    ablate,
    capture,
    capture_activations,
    intervene,
    last_token_positions,
    replace,
    steer,
)
from irmscope.models.loading import DEFAULT_MODEL, LoadedModel, available_models, load_model, load_tokenizer
from irmscope.models.reading import completion_statistics, read_pairs

__all__ = [
    "ADAPTERS",
    "SITE_KINDS",
    "ArchitectureAdapter",
    "Capture",
    "DEFAULT_MODEL",
    "LoadedModel",
    "Sampling",
    "ablate",
    "adapter_for",
    "available_models",
    "batches",
    "capture",
    "capture_activations",
    "completion_statistics",
    "generate_amplified",
    "generate_completions",
    "intervene",
    "last_token_positions",
    "load_model",
    "load_tokenizer",
    "parse_site",
    "read_pairs",
    "replace",
    "site_name",
    "steer",
]
