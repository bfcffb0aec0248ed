"""Matplotlib figures for the report, returned as PNG bytes (no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def reward_histogram(scores: Mapping[str, np.ndarray], reward_name: str) -> bytes:
    """Overlaid histograms of per-completion rewards, one per model, with each mean marked."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    values = np.concatenate([np.asarray(v) for v in scores.values()])
    bins = np.linspace(values.min() - 0.05, values.max() + 0.05, 31)
    for label, v in scores.items():
        line = ax.hist(v, bins=bins, alpha=0.55, label=f"{label} (mean {np.mean(v):.2f})")[2][0]
        ax.axvline(np.mean(v), color=line.get_facecolor(), linestyle="--", linewidth=1.2)
    ax.set_xlabel(f"{reward_name} reward of prompt + completion")
    ax.set_ylabel("completions")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)
