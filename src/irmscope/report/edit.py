"""The page ``irmscope edit`` writes: what a rank-one reward edit did to the edited word, to every other
word, and to what the model writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.report.html import Section, interval, write_page
from irmscope.report.plots import edit_specificity_plot


def edit_section(study: dict[str, Any]) -> Section:
    g = study["generation"]
    word = study["word"]
    rows = [
        [
            f"'{word}' (lexicon value {study['lexicon_value']})",
            study["target_before"],
            study["target_after"],
            study["target_change"],
        ],
        [f"{study['n_unrelated']} other words: mean |change|", "", "", study["unrelated_mean_abs_change"]],
        [f"{study['n_unrelated']} other words: largest |change|", "", "", study["unrelated_max_abs_change"]],
        [
            f"{study['n_unrelated']} other words: median change (shared)",
            "",
            "",
            study["unrelated_median_change"],
        ],
        [
            f"{study['n_unrelated']} other words: mean |deviation from that median|",
            "",
            "",
            study["unrelated_mean_abs_deviation"],
        ],
    ]
    behaviour = [
        [
            f"expected count of '{word}' per completion",
            g["expected_occurrences_before"],
            g["expected_occurrences_after"],
        ],
        [
            "expected count after / before, per prompt (geometric mean, 95% CI)",
            "",
            interval(g["expected_occurrences_ratio"]),
        ],
        [f"sampled count of '{word}' per completion", g["occurrences_before"], g["occurrences_after"]],
        [f"mean known reward ({study['reward']})", g["reward_before"], g["reward_after"]],
        [
            "known reward after - before, paired per prompt (95% CI)",
            "",
            interval(g["reward_change"], signed=True),
        ],
    ]
    return Section(
        f"Reward edit: making '{word}' rewarded (rank-one edit of block {study['layer']}'s MLP)",
        paragraphs=[
            "The elicited reward of a word is the policy shift against the base model (how much tuning "
            "raised the word's log-probability where it could come next), averaged over "
            f"{study['n_measure_texts']} reviews the edit was not fitted on, and put in lexicon units "
            f"by the least-squares line from shift to lexicon value over the other words (r = "
            f"{study['calibration_pearson']:.2f}, {study['units_per_nat']:.2f} units per nat)."
            f" The edit asked for {study['gain_asked_nats']:.2f} nats ({study['gain_units_asked']} units)"
            f" and reached {study['gain_reached_nats']:.2f} nats on its"
            f" {study['n_edit_texts']} fitting texts.",
            f"Generation: {study['n_prompts']} evaluation prompts completed before and after the edit "
            "with the same seed. The expected count (the sum over a completion's positions of the word's "
            "probability) is exact and moves smoothly; a rare word's sampled count is mostly zeros.",
        ],
        tables=[
            ("Elicited reward before and after the edit", ["words", "before", "after", "change"], rows),
            ("Generation before and after the edit", ["measure", "before", "after"], behaviour),
        ],
        figures=[
            (
                "Specificity: change of every other word's elicited reward",
                edit_specificity_plot(study["unrelated_changes"], study["target_change"], word),
            )
        ],
    )


def write_edit_report(out_dir: str | Path, study: dict[str, Any]) -> Path:
    """Write ``edit.json``, ``edit.html`` and its tables as CSV under ``out_dir``."""
    title = f"irmscope: reward edit of '{study['word']}'"
    return write_page(out_dir, "edit", study, title, [edit_section(study)], subtitle=study["run"])
