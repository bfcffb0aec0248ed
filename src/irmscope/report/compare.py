"""The page ``irmscope compare`` writes: several runs' leaderboards side by side, one column per reward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.report.html import Section, interval, write_page
from irmscope.report.plots import reward_forest

_METRIC_NAMES = {
    "pearson": "Pearson",
    "spearman": "Spearman",
    "kendall": "Kendall",
    "pearson_within_policy": "Pearson within each model's completions",
    "preference_accuracy": "preference accuracy",
    "epic": "EPIC distance",
}


def _panels(merged: dict[str, Any], metric: str) -> dict[str, list]:
    """``reward_forest``'s rows for one metric: per reward, each method's tuned and base intervals."""
    panels = {}
    for reward in merged["rewards"]:
        rows = []
        for row in merged["rows"]:
            scores = row["scores"][reward] or {}
            rows.append((row["method"], {m: scores[m][metric] for m in ("tuned", "base") if scores.get(m)}))
        panels[reward] = rows
    return panels


def comparison_sections(merged: dict[str, Any]) -> list[Section]:
    rewards = merged["rewards"]
    runs = merged["runs"]
    wide = []
    for row in merged["rows"]:
        for model in ("tuned", "base"):
            cells = []
            for reward in rewards:
                scores = (row["scores"][reward] or {}).get(model)
                for metric in ("pearson_within_policy", "preference_accuracy"):
                    cells.append(interval(scores[metric]) if scores else "-")
            wide.append([row["method"], model, "yes" if row["supervised"] else "no", *cells])
    long = [
        [row["method"], reward, model, *(interval((scores[model] or {}).get(m)) for m in _METRIC_NAMES)]
        for row in merged["rows"]
        for reward in rewards
        if (scores := row["scores"][reward])
        for model in ("tuned", "base")
    ]
    about = [
        f"{reward}: {runs[reward]['tuned']} against base {runs[reward]['base']}, "
        f"{runs[reward]['n_prompts']} held-out prompts"
        + (
            f", tuning gain in mean reward {interval(runs[reward]['reward_gain'], signed=True)}"
            if runs[reward]["reward_gain"]
            else ""
        )
        + f". {runs[reward]['reward_description']}"
        for reward in rewards
    ]
    return [
        Section(
            "Leaderboards side by side",
            paragraphs=[
                "Each column is one run: a model tuned against the named reward, scored on its own "
                "held-out prompts. 'base' rows apply the same method to the untuned model. On a reward the"
                " base model already knows (VADER sentiment) only the gap between the tuned and the base "
                "row is evidence of what tuning wrote; on a planted reward the base model cannot know, the"
                " base row should sit near chance (a correlation of 0, a preference accuracy of 0.5). The "
                "within-model Pearson is the metric that detecting which model wrote a completion cannot "
                "explain. Intervals: 95% bootstrap over prompts.",
                *about,
            ],
            figures=[
                (
                    f"{_METRIC_NAMES[metric]} by method and reward, tuned vs base model",
                    reward_forest(_panels(merged, metric), _METRIC_NAMES[metric], reference),
                )
                for metric, reference in (("pearson_within_policy", 0.0), ("preference_accuracy", 0.5))
            ],
            tables=[
                (
                    "Within-model Pearson and preference accuracy by reward",
                    [
                        "method",
                        "model",
                        "supervised",
                        *(
                            f"{reward}: {name}"
                            for reward in rewards
                            for name in ("within-model Pearson", "preference accuracy")
                        ),
                    ],
                    wide,
                ),
                (
                    "Every metric by method, reward and model",
                    ["method", "reward", "model", *_METRIC_NAMES.values()],
                    long,
                ),
            ],
        ),
        Section(
            "Methods",
            paragraphs=[f"{row['method']}: {row['description']}." for row in merged["rows"]],
        ),
    ]


def write_comparison(out_dir: str | Path, merged: dict[str, Any]) -> Path:
    """Write ``comparison.html``, ``comparison.json`` and the tables as CSV under ``out_dir``."""
    title = "irmscope: leaderboards compared across rewards"
    sections = comparison_sections(merged)
    return write_page(out_dir, "comparison", merged, title, sections, subtitle=", ".join(merged["rewards"]))
