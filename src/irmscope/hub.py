"""The Hugging Face hub, seen from a machine that may have no network.

Model and dataset loaders use these checks so that a hub id fails in seconds with a one-line message when
the hub is off or out of reach, instead of retrying for about 25 s.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
PROBE_TIMEOUT_S = 3.0


def hub_offline() -> bool:
    """Whether Hugging Face offline mode is on, from the environment *now* or from the libraries' constants.

    ``datasets`` and ``huggingface_hub`` read ``HF_HUB_OFFLINE`` once, at import, so a flag set later (in a
    notebook, or by a test) would otherwise be ignored; we read the environment ourselves as well.
    """
    if any(os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE") for var in _OFFLINE_VARS):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A quick TCP connect to the hub endpoint, so that no network fails in seconds, not after 5 retries.

    Behind a proxy a direct connect proves nothing, so we then assume the hub is reachable and let the
    download itself decide.
    """
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def offline_mode() -> Iterator[None]:
    """Force the libraries' offline constants on for one call: only the local cache is used, and a miss
    raises at once instead of retrying."""
    import datasets.config
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved
