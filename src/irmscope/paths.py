"""Where irmscope keeps what it derives once and reuses (converted checkpoints, trained classifiers)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache: ``$IRMSCOPE_CACHE``, else ``$XDG_CACHE_HOME/irmscope``, else ``~/.cache/irmscope``."""
    env = os.environ.get("IRMSCOPE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "irmscope"
