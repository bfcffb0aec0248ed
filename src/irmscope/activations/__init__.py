"""The on-disk activation cache: write with :func:`cache_activations`, read with :class:`ActivationStore`."""

from irmscope.activations.caching import cache_activations
from irmscope.activations.store import ActivationStore

__all__ = ["ActivationStore", "cache_activations"]
