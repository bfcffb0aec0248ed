"""Matplotlib figures for the report, returned as PNG bytes (no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from irmscope.io import atomic_write  # noqa: E402


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


def training_curves(curves: Mapping[str, list[tuple[int, float]]]) -> bytes:
    """Reward and KL (or the DPO margin) per optimizer step, with a running mean over 5 steps."""
    names = [name for name in ("reward", "kl", "dpo_margin", "loss") if curves.get(name)][:2]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        steps, values = zip(*curves[name], strict=True)
        ax.plot(steps, values, color="#9ab", linewidth=1, label="per step")
        if len(values) >= 5:
            smooth = np.convolve(values, np.ones(5) / 5, mode="valid")
            ax.plot(steps[4:], smooth, color="#1f5f9f", linewidth=2, label="running mean (5)")
        ax.set_xlabel("optimizer step")
        ax.set_title(name.replace("_", " "))
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def divergence_bars(per_layer: Mapping[str, float], highlight: list[int]) -> bytes:
    """Per-layer parameter distance between base and tuned model; the selected layers are highlighted."""
    layers = [key for key in per_layer if key.startswith("layer ")]
    values = [per_layer[key] for key in layers]
    colors = ["#c0392b" if int(key.split()[1]) in highlight else "#7f8c8d" for key in layers]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.bar(range(len(layers)), values, color=colors)
    ax.set_xticks(range(len(layers)), [key.split()[1] for key in layers], fontsize=7)
    ax.set_xlabel("layer (red: top-divergence layers, used for activations)")
    ax.set_ylabel("summed L2 distance of weights")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


_MODEL_STYLES = {"tuned": ("#c0392b", -0.15), "base": ("#7f8c8d", 0.15)}


def write_divergence_bars(path: str | Path, per_layer: Mapping[str, float], highlight: list[int]) -> Path:
    """:func:`divergence_bars` written to ``path`` as a PNG (atomically: a kill leaves no half image)."""
    png = divergence_bars(per_layer, highlight)
    return atomic_write(path, lambda tmp: tmp.write_bytes(png))


def _forest_on(ax, rows: list[tuple[str, Mapping[str, dict | None]]], reference: float = 0.0) -> None:
    """Draw one point with its interval per row and model (tuned above base), and a line at the
    ``reference`` value (no information); ``rows`` is ``[(label, {"tuned": {"value", "low", "high"},
    "base": ...}), ...]``, a missing or NaN entry left out."""
    for i, (_, by_model) in enumerate(rows):
        for model, (color, offset) in _MODEL_STYLES.items():
            e = by_model.get(model)
            if not e or e["value"] != e["value"]:
                continue
            ax.errorbar(
                e["value"],
                i + offset,
                xerr=[[e["value"] - e["low"]], [e["high"] - e["value"]]],
                fmt="o",
                color=color,
                capsize=3,
                label=model if model not in ax.get_legend_handles_labels()[1] else None,
            )
    ax.axvline(reference, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.spines[["top", "right"]].set_visible(False)


def tau_forest(rows: list[tuple[str, Mapping[str, dict]]]) -> bytes:
    """Kendall's tau with its 95% interval per method, tuned model beside the untuned base model.

    ``rows`` is ``[(label, {"tuned": agreement dict, "base": agreement dict}), ...]``; a missing or NaN
    entry is left out.
    """
    fig, ax = plt.subplots(figsize=(6.8, 0.42 * len(rows) + 1.2))
    intervals = [
        (
            label,
            {
                model: {"value": a["kendall_tau"], "low": a["kendall_ci"][0], "high": a["kendall_ci"][1]}
                for model, a in by_model.items()
                if a
            },
        )
        for label, by_model in rows
    ]
    _forest_on(ax, intervals)
    ax.set_xlabel("Kendall's tau with the true lexicon (held-out words, 95% bootstrap CI)")
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


def reward_forest(
    panels: Mapping[str, list[tuple[str, Mapping[str, dict | None]]]], xlabel: str, reference: float = 0.0
) -> bytes:
    """One forest panel per run (known reward), methods down the shared axis: each method's score with its
    interval for the tuned model beside the base-model control (``_forest_on``'s rows per panel), and a
    line at the score of no information (``reference``: 0 for a correlation, 0.5 for an accuracy)."""
    n_rows = max(len(rows) for rows in panels.values())
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(3.6 * len(panels) + 2.4, 0.42 * n_rows + 1.2),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for ax, (reward, rows) in zip(axes[0], panels.items(), strict=True):
        _forest_on(ax, rows, reference)
        ax.set_title(reward, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0][0].legend(frameon=False, fontsize=8)
    return _png(fig)


def probe_by_layer(per_model: Mapping[str, Mapping[str, list[dict]]], target: str) -> bytes:
    """Held-out Pearson r of the probe at each layer: one line per (model, position), shuffled dotted."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for (model, kinds), color in zip(per_model.items(), ("tab:red", "tab:blue", "tab:green"), strict=False):
        for kind, style in zip(kinds, ("-", "--", ":"), strict=False):
            rows = kinds[kind]
            ax.plot(
                [r["layer"] for r in rows],
                [r["pearson"]["value"] for r in rows],
                style,
                color=color,
                label=f"{model}, {kind.replace('_', ' ')}",
            )
        rows = next(iter(kinds.values()))
        ax.plot(
            [r["layer"] for r in rows],
            [r["shuffled_pearson"] for r in rows],
            ".",
            color=color,
            alpha=0.5,
            label=f"{model}, shuffled labels",
        )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("layer (residual stream leaving the block)")
    ax.set_ylabel(f"held-out Pearson r ({target})")
    ax.legend(frameon=False, fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def error_by_position(curves: Mapping[str, list[dict]], target: str) -> bytes:
    """Held-out absolute error of an all-positions probe against the token's position (the probe study
    "Do RL'd models estimate anticipated rewards?", Fig. 5)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for label, curve in curves.items():
        x = np.array([p["position"] for p in curve])
        y = np.array([p["mae"] for p in curve])
        sem = np.array([p["mae_sem"] for p in curve])
        ax.plot(x, y, label=label)
        ax.fill_between(x, y - sem, y + sem, alpha=0.2)
    ax.set_xlabel("position in the continuation (0 = its first token)")
    ax.set_ylabel(f"mean |error| ({target})")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def steering_plot(curves: Mapping[str, dict]) -> bytes:
    """Reward change and base-model perplexity against steering scale; random controls dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, curve in curves.items():
        scales = [p["scale"] for p in curve["points"]]
        change = [p["reward_change"]["value"] for p in curve["points"]]
        low = [p["reward_change"]["low"] for p in curve["points"]]
        high = [p["reward_change"]["high"] for p in curve["points"]]
        style = "--" if curve["kind"] == "random control" else "-"
        line = axes[0].plot(scales, change, style, marker="o", label=name)[0]
        axes[0].fill_between(scales, low, high, color=line.get_color(), alpha=0.12)
        axes[1].plot(
            scales, [p["base_perplexity"] for p in curve["points"]], style, marker="o", color=line.get_color()
        )
    axes[0].axhline(0, color="grey", linewidth=0.8)
    axes[0].set_ylabel("change in mean reward vs unsteered")
    axes[1].set_ylabel("base-model perplexity of completions")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("steering scale (x typical activation norm)")
        ax.spines[["top", "right"]].set_visible(False)
    return _png_with_legend_below(fig, axes[0], ncol=3)


def _png_with_legend_below(fig: plt.Figure, ax: plt.Axes, *, ncol: int) -> bytes:
    """The figure as PNG with ``ax``'s legend centred under the panels: one legend serves both panels of
    a two-panel figure, whose lines share their labels, and under them it covers no data."""
    fig.legend(
        *ax.get_legend_handles_labels(),
        frameon=False,
        fontsize=7,
        ncol=ncol,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
    )
    return _png(fig)


def attribution_plot(attribution: Mapping[str, dict]) -> bytes:
    """Per block: how far each attention / MLP output separates high- from low-reward texts along the
    model's reward direction (left), and patching recovery on contrast pairs (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (model, result), color in zip(attribution.items(), ("tab:red", "tab:blue"), strict=False):
        layers = np.arange(len(result["attn"]))
        axes[0].plot(layers, result["attn"], "-", marker=".", color=color, label=f"{model}, attention")
        axes[0].plot(layers, result["mlp"], "--", marker=".", color=color, label=f"{model}, MLP")
        if result.get("patching"):
            axes[1].plot(layers, result["patching"]["attn"], "-", marker=".", color=color)
            axes[1].plot(layers, result["patching"]["mlp"], "--", marker=".", color=color)
    axes[0].set_ylabel("separation along the reward direction\n(upper minus lower half of reward)")
    axes[1].set_ylabel("patching recovery (positive -> negative)")
    for ax in axes:
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("block")
        ax.spines[["top", "right"]].set_visible(False)
    return _png_with_legend_below(fig, axes[0], ncol=4)


def head_heatmap(heads: list[list[float]], model: str) -> bytes:
    """Separation written by each attention head (blocks down, heads across), centred on 0."""
    values = np.asarray(heads)
    limit = float(np.abs(values).max()) or 1.0
    fig, ax = plt.subplots(figsize=(6.4, 0.16 * len(values) + 1.2))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("block")
    ax.set_title(f"{model}: separation along the reward direction written by each head", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _png(fig)


def edit_specificity_plot(unrelated_changes: Mapping[str, float], target_change: float, word: str) -> bytes:
    """How far an edit moved every other lexicon word's elicited reward (histogram) against how far it
    moved the edited word (red line): a specific edit is a narrow bump at 0 and a line far from it."""
    changes = np.asarray(list(unrelated_changes.values()))
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.hist(changes, bins=60, color="#7f8c8d", label=f"{len(changes)} other words")
    ax.axvline(target_change, color="#c0392b", linewidth=2, label=f"'{word}'")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("change of the elicited reward (lexicon units)")
    ax.set_ylabel("words")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)
