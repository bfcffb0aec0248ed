"""Report sections for feature interpretation (§4.4) and its validation (§5.2: Tables 5 and 6).

Feature dashboards colour each token of a feature's top-activating contexts by the feature's activation
(darker = stronger), so a reader can check an explanation against the evidence it was written from.
"""

from __future__ import annotations

import html
from typing import Any

from irmscope.report.html import Section, interval


def explainer_name(label: str) -> str:
    """The short name of an explainer's label (before its colon), shown beside everything it wrote, so an
    offline heuristic's output is never read as a language model's (or as the paper's)."""
    return label.split(":")[0]


def shaded_contexts(contexts: list[dict[str, Any]]) -> str:
    """Contexts (``tokens``, ``activations``, ``peak``) as lines of tokens shaded by activation (darker =
    stronger, relative to the strongest token shown), the peak outlined."""
    peak = max((max(c["activations"]) for c in contexts), default=0.0) or 1.0
    lines = []
    for context in contexts:
        spans = []
        for i, (token, act) in enumerate(zip(context["tokens"], context["activations"], strict=True)):
            alpha = max(act, 0.0) / peak
            border = ";outline:1px solid #c40" if i == context["peak"] else ""
            spans.append(
                f"<span title='{act:.3f}' style='background:rgba(255,120,0,{alpha:.2f}){border}'>"
                f"{html.escape(token)}</span>"
            )
        lines.append(f"<div class='ctx'>{''.join(spans)}</div>")
    return "".join(lines)


def dashboard(feature: dict[str, Any], explainer: str) -> str:
    """One feature's dashboard: heading, description (named by its ``explainer``), and its contexts with
    per-token shading."""
    verdict = "related to the reward" if feature["related"] else "not related"
    return (
        f"<div class='feature'><b>{html.escape(feature['site'])} #{feature['feature']}</b> "
        f"({verdict}; active on {feature['frequency']:.1%} of tokens, max {feature['max_activation']:.2f})"
        f"<p class='note'>{html.escape(explainer)}: {html.escape(feature['description'])}</p>"
        f"{shaded_contexts(feature['contexts'])}</div>"
    )


def interpretation_sections(
    interpretation: dict[str, Any], validation: dict[str, Any] | None, reward: str
) -> list[Section]:
    features = interpretation["features"]
    name = explainer_name(interpretation["explainer"])
    rows = [
        [
            f["site"],
            f["feature"],
            f["pair_cosine"],
            "yes" if f["related"] else "no",
            f["frequency"],
            f["reward_correlation"],
            f["reward_word_share"],
            f["description"],
        ]
        for f in features
    ]
    shown = [f for f in features if f["related"]][:12] or features[:6]
    sections = [
        Section(
            "Feature interpretation (§4.4)",
            paragraphs=[
                f"At each site, the {interpretation['top_k']} features of the 1x dictionary best matched "
                "(decoder cosine) in a second, larger dictionary trained on the same activations are "
                f"explained from their top-activating contexts in held-out reviews, then classified as "
                f"related to the '{reward}' reward or not. Explainer: {interpretation['explainer']}. "
                f"{interpretation['n_related']} of {interpretation['n_explained']} features were classified "
                "as related. 'r' is the correlation of the feature's activation with the reward value of "
                "the token it reads; 'reward-word share' is the share of its top contexts that peak on a "
                "word the reward scores.",
            ],
            tables=[
                (
                    "Shared features, explained and classified",
                    [
                        "site",
                        "feature",
                        "pair cosine",
                        "related",
                        "frequency",
                        "r",
                        "reward-word share",
                        f"description by {name}",
                    ],
                    rows,
                )
            ],  # fmt: skip
            html=[dashboard(f, name) for f in shown],
        )
    ]
    if validation:
        sections.append(_validation_section(validation, reward, name))
    return sections


#: Table 5's ablated feature sets, in the order shown
ABLATED = {
    "related": "reward-related features ({explainer})",
    "random": "as many random features",
    "attributed": "features chosen by reward attribution",
    "attributed_opposite": "features chosen for the opposite reward",
    "attributed_random": "as many random features (attribution's count)",
}


def _validation_section(validation: dict[str, Any], reward: str, explainer: str) -> Section:
    t5 = validation["table5"]
    table6_paragraphs, table6_tables = _table6(validation)
    return Section(
        "Validation by ablation (§5.2)",
        paragraphs=_table5_paragraphs(t5, reward, explainer) + table6_paragraphs,
        tables=[_table5(validation, explainer), *_table5_controls(t5), *table6_tables],
    )


def _table5(validation: dict[str, Any], explainer: str) -> tuple[str, list[str], list[list[Any]]]:
    """Table 5: the base and tuned models' mean reward, then each ablated feature set's, with its paired
    change and its drop as a share of the tuning gain, so every ablation reads beside its random control."""
    t5 = validation["table5"]
    rows = [
        ["base model (no tuning)", interval(validation["base_mean_reward"], signed=True), "", "", ""],
        ["tuned model", interval(t5["before"], signed=True), "", "", ""],
    ]
    for name, label in ABLATED.items():
        if name in t5:
            n = sum(len(f) for f in t5[name]["features"].values())
            removed = t5[name].get("gain_removed")
            rows.append(
                [
                    f"tuned, {label.format(explainer=explainer)} ablated",
                    interval(t5[name]["after"], signed=True),
                    interval(t5[name]["change"], signed=True),
                    interval(removed, signed=True) if removed else "",
                    n,
                ]
            )
    return (
        "Table 5: reward before and after ablation",
        ["model", "mean reward", "change", "drop / tuning gain", "features"],
        rows,
    )


def _table5_paragraphs(t5: dict[str, Any], reward: str, explainer: str) -> list[str]:
    """What Table 5 measures and what its controls are, plus the notes the validation stage left on it
    (why a set is missing, why the gain share is blank)."""
    paragraphs = [
        f"Mean '{reward}' reward of completions to the same {t5['n_prompts']} held-out prompts (Table 5), "
        "with each ablated completion sampled with the same random numbers as the unablated one, so the "
        "change is a paired difference. Ablating a feature removes its decoder direction times its "
        "activation from the site; ablating as many random features is the control. The drop as a share "
        "of the tuning gain is the fall in mean reward over the tuned model's gain over the base model on "
        "the same prompts (1 = down to the base model's reward; it says nothing of whether tuning made the "
        "features)."
    ]
    if "attributed" in t5:
        paragraphs.append(
            f"Beside the explainer's choice (the paper's procedure, here made by the {explainer}), "
            "features are also chosen by reward attribution: "
            "those whose removal should most lower the reward the tuned model expects from its next token, "
            "a first-order estimate summed over the positions of its completions to prompts that are not "
            "evaluation prompts. Its control is the same choice made for the opposite reward (values "
            "negated): if ablating those lowered the reward too, the effect would be damage to the model, "
            "not removal of the reward."
        )
    for key in ("note", "gain_note"):
        if key in t5:
            paragraphs.append(t5[key])
    return paragraphs


def _table6(validation: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str], list[list[Any]]]]]:
    """Table 6 with the paragraph that says what it counts (or why it was skipped): how often the
    reward-related features fire where R predicts high reward, beside the average feature and (control)
    every token, so a high frequency is not read without its baseline."""
    paragraphs = []
    if "table6_skipped" in validation:
        paragraphs.append(f"Table 6 skipped: {validation['table6_skipped']}.")
    if "table6" not in validation:
        return paragraphs, []
    rows6 = [
        [
            variant,
            t["n_tokens_above_threshold"],
            t["n_tokens"],
            t["frequency_related_above"],
            t["frequency_all_above"],
            t["frequency_related_everywhere"],
            t["frequency_all_everywhere"],
        ]
        for variant, t in validation["table6"].items()
    ]
    first = next(iter(validation["table6"].values()))
    paragraphs.append(
        f"Table 6: on a third set of reviews read by nothing else (not the SAEs' training texts, not "
        "the held-out texts whose top contexts picked the reward-related features, none beginning with "
        f"a prompt), the tokens where R's raw output exceeds {first['threshold']:g}; "
        "how often the reward-related features fire there, against the average feature, and (control) "
        "the same frequencies over every token. R's output is in the units of its training targets, not "
        "the rescaled [-4, 4] lexicon: for faithful and ridge-delta (the two rows), sentiment activation "
        "deltas scaled so that the largest training delta is 4."
    )
    table = (
        "Table 6: activation frequency where R predicts high reward",
        ["R", "tokens above threshold", "tokens", "related features there", "all features there",
         "related features everywhere", "all features everywhere"],
        rows6,
    )  # fmt: skip
    return paragraphs, [table]


def _table5_controls(t5: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """Every draw of Table 5's random controls, and the attributed ablations repeated in the base model."""
    tables = []
    draw_rows = [
        [
            ABLATED[name],
            row["seed"],
            f"{row['change']:+.3f}",
            f"{row['gain_removed']:+.1%}" if "gain_removed" in row else "",
        ]
        for name in ("random", "attributed_random")
        if "draws" in t5.get(name, {})
        for row in t5[name]["draws"]["rows"]
    ]
    if draw_rows:
        tables.append(
            (
                "Random draws of Table 5's controls",
                ["control", "seed", "change", "drop / tuning gain"],
                draw_rows,
            )
        )
    if "base_model_check" in t5:
        base_rows = [
            [f"base, {ABLATED[name]} ablated", interval(check["change"], signed=True)]
            for name, check in t5["base_model_check"].items()
        ]
        tables.append(
            (
                "Table 5 in the untuned base model (the tuned model's dictionaries)",
                ["model", "change"],
                base_rows,
            )
        )
    return tables
