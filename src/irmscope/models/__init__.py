"""Models: loading (packaged, tiny, local, hub), hook-site adapters, and hooks to read or rewrite sites."""

from irmscope.models.adapters import (
    ADAPTERS,
    SITE_KINDS,
    ArchitectureAdapter,
    adapter_for,
    parse_site,
    site_name,
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

__all__ = [
    "ADAPTERS",
    "SITE_KINDS",
    "ArchitectureAdapter",
    "Capture",
    "DEFAULT_MODEL",
    "LoadedModel",
    "ablate",
    "adapter_for",
    "available_models",
    "capture",
    "capture_activations",
    "intervene",
    "last_token_positions",
    "load_model",
    "load_tokenizer",
    "parse_site",
    "replace",
    "site_name",
    "steer",
]
