"""Report sections for the probe study ("Do RL'd models estimate anticipated
rewards?"), steering (its Fig. 4) and the leaderboard."""

from __future__ import annotations

from typing import Any

from irmscope.report.html import Section, interval
from irmscope.report.plots import (
    attribution_plot,
    error_by_position,
    head_heatmap,
    probe_by_layer,
    steering_plot,
)

_TARGETS = {
    "reward": "the known reward of the evaluation completions",
    "ratings": "human star ratings of reviews mapped to [-1, 1]",
    "labels": "human positive/negative labels of reviews as +1/-1",
}


def probe_section(probes: dict[str, Any]) -> Section:
    rows, figures = [], []
    for target in ("reward", "ratings"):
        study = probes.get(target)
        if not study:
            continue
        name = study.get("target", target)
        per_model = {label: s for label, s in study.items() if label != "target"}
        for label, summary in per_model.items():
            best = summary["best"]
            rows.append(
                [
                    _TARGETS[name],
                    label,
                    best["position"].replace("_", " "),
                    best["layer"],
                    interval(best["pearson"]),
                    f"{best['mae']:.3f}",
                    f"{best['shuffled_pearson']:+.3f}",
                    f"{best['shuffled_mae']:.3f}",
                    f"{summary['n_train']} / {summary['n_test']}",
                ]
            )
        figures.append(
            (
                f"Probe quality by layer: {_TARGETS[name]}",
                probe_by_layer({label: s["per_layer"] for label, s in per_model.items()}, name),
            )
        )
        curves = {label: s["by_position"]["curve"] for label, s in per_model.items() if s["by_position"]}
        if curves:
            figures.append(
                (
                    f"Error against position ({_TARGETS[name]}; one probe fitted on every token at the "
                    "layer best read from the last token)",
                    error_by_position(curves, name),
                )
            )
    return Section(
        "Reward probes (after the probe study “Do RL’d models estimate anticipated rewards?”)",
        paragraphs=[
            "Ridge probes (regularisation chosen by 5-fold cross-validation over whole prompts) on the "
            "residual stream leaving each "
            "block, read at the text's last token, at the prompt's last token, and as the mean over the "
            "text's tokens. The best layer and position are chosen on the training texts only; every "
            "number is on held-out texts (completions of held-out prompts), beside the same probe fitted "
            "on shuffled labels. A high r for the base model means the pretrained model already represents"
            " the target."
        ],
        tables=[
            (
                "Best probe per target and model (held-out)",
                [
                    "target",
                    "model",
                    "position",
                    "layer",
                    "Pearson r [95% CI]",
                    "MAE",
                    "shuffled r",
                    "shuffled MAE",
                    "train / test texts",
                ],
                rows,
            )
        ],
        figures=figures,
    )


def steering_section(steering: dict[str, Any], reward: str) -> Section:
    rows = [
        [
            name,
            curve["site"],
            point["scale"],
            interval(point["mean_reward"]),
            interval(point["reward_change"], signed=True),
            f"{point['base_perplexity']:.1f}",
            f"{point['distinct_bigrams']:.3f}",
        ]
        for name, curve in steering["curves"].items()
        for point in curve["points"]
    ]
    examples = [
        [name, point["scale"], point["example"]]
        for name, curve in steering["curves"].items()
        if curve["kind"] != "random control"
        for point in curve["points"]
    ]
    return Section(
        "Steering along reward directions (after that probe study's Fig. 4)",
        paragraphs=[
            f"The tuned model completes {steering['n_prompts']} evaluation prompts while a direction is "
            "added at every position of its site; scale 1 adds a vector as long as a typical activation "
            f"there. Reward is '{reward}'; the change is paired per prompt against the unsteered "
            "completions (same seed). Random directions of the same norm at the same site are the "
            "control; the base model's perplexity and the share of distinct bigrams show whether the text"
            " stays fluent."
        ],
        figures=[("Reward change and fluency against steering scale", steering_plot(steering["curves"]))],
        tables=[
            (
                "Steering: reward and fluency by direction and scale",
                [
                    "direction",
                    "site",
                    "scale",
                    "mean reward [95% CI]",
                    "change vs unsteered",
                    "base perplexity",
                    "distinct bigrams",
                ],
                rows,
            ),
            ("Steering: first completion at each scale", ["direction", "scale", "completion"], examples),
        ],
    )


def attribution_section(attribution: dict[str, Any], reward: str) -> Section:
    models = {label: attribution[label] for label in ("tuned", "base") if attribution.get(label)}
    rows = []
    for label, result in models.items():
        by_component = [("embedding", result["embedding"])]
        by_component += [(f"block {i} attention", v) for i, v in enumerate(result["attn"])]
        by_component += [(f"block {i} MLP", v) for i, v in enumerate(result["mlp"])]
        if result.get("heads"):
            by_component += [
                (f"block {i} head {h}", v) for i, row in enumerate(result["heads"]) for h, v in enumerate(row)
            ]
        top = sorted(by_component, key=lambda item: -abs(item[1]))[:8]
        rows += [[label, name, f"{value:+.3f}", f"{value / result['total']:+.2f}"] for name, value in top]
    figures = [("Separation and patching recovery per block", attribution_plot(models))]
    figures += [
        (f"Heads ({label})", head_heatmap(result["heads"], label))
        for label, result in models.items()
        if result.get("heads")
    ]
    return Section(
        "Reward attribution: which components write the reward direction",
        paragraphs=[
            f"For each model, a ridge probe of '{reward}' on the mean-pooled residual stream leaving the "
            "last block (fitted on the coverage completions) gives a reward direction. The stream there "
            "is the sum of the embedding and every attention and MLP output, so the probe's read-out "
            "splits exactly into one term per component (per head for Llama-family models). 'Separation' "
            f"is a component's mean term over the {attribution['n_texts']} completions in the upper half "
            "of the known reward minus the lower half; all terms add up to the probe's own separation "
            "(the share column). Patching: on contrast pairs (a context ending in a rewarded vs a "
            f"penalised word; {attribution['n_pairs']} pairs), one block's attention or MLP output at the "
            "word is copied from the positive into the negative run; recovery is the share of the "
            "direction's difference that this restores. The base model is the control: what pretraining "
            "already wrote.",
        ],
        figures=figures,
        tables=[
            (
                "Attribution: the components that write most of the separation",
                ["model", "component", "separation", "share"],
                rows,
            )
        ],
    )


def _details(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per method that reports more than its scores (IRL's identifiability, CCS's layer)."""
    out = []
    for row in rows:
        details = row.get("details") or {}
        if "identifiability" in details:
            ident = details["identifiability"]
            seeds = ", ".join(f"{k} {v:.2f}" for k, v in ident["agreement_across_seeds"].items())
            sets = ", ".join(f"{k} {v:.2f}" for k, v in ident["agreement_across_feature_sets"].items())
            accuracy = ident["preference_accuracy"].values()
            out.append(
                f"{row['method']} (features at the block most cross-fitting folds chose for the tuned model, "
                f"{details['layer']['tuned']}): "
                f"recovered rewards agree across resamples of the demonstrations with r = {seeds}; across "
                f"feature sets with r = {sets}; preference accuracy ranges {min(accuracy):.3f}-"
                f"{max(accuracy):.3f} over these runs."
            )
        if "n_pairs" in details and "tuned" in details:
            parts = [
                f"{label}: block {details[label]['layer']}, held-out CCS loss "
                f"{details[label]['held_out_loss']:.3f}, held-out pair accuracy "
                f"{details[label]['held_out_pair_accuracy']:.2f}"
                for label in ("tuned", "base")
            ]
            out.append(f"{row['method']} on {details['n_pairs']} contrast pairs: " + "; ".join(parts) + ".")
    return out


def leaderboard_section(board: dict[str, Any], reward: str) -> Section:
    rows = []
    for row in board["rows"]:
        for label in ("tuned", "base"):
            metrics = row[label]
            if metrics is None:
                note = row["base_note"]
                rows.append([row["method"], label, "yes" if row["supervised"] else "no", note, *[""] * 5])
                continue
            unidentified = set(row.get("not_identified", ()))
            cells = [
                interval(metrics[name])
                + (" (not identified)" if name in unidentified else "")
                + _undefined(metrics[name])
                for name in (
                    "pearson",
                    "spearman",
                    "kendall",
                    "pearson_within_policy",
                    "preference_accuracy",
                    "epic",
                )
            ]
            rows.append([row["method"], label, "yes" if row["supervised"] else "no", *cells])
    return Section(
        "Leaderboard: every reward estimate against the known reward",
        paragraphs=[
            f"Known reward: '{reward}'. Coverage: {board['n_prompts']} held-out prompts, each completed "
            "once by the base and once by the tuned model. Preference accuracy is over the two "
            "completions of each prompt (chance 0.5). EPIC is the Pearson distance between the rewards "
            "after removing each prompt's mean over the coverage completions (the canonicalisation of "
            "Gleave et al. for one-step episodes): 0 = same policy ordering, 0.71 = unrelated. Intervals:"
            " bootstrap over prompts. 'base' rows apply the same method to the untuned model; "
            "'supervised' methods saw known-reward labels of other prompts' completions (cross-fitted). "
            "The tuned model's completions score higher and are recognisably its own, so a method that "
            "only detects the author scores well on pooled metrics and preference accuracy: compare every"
            " row with the 'which model wrote it' control, and read the within-model Pearson, which "
            "authorship cannot explain. A value marked 'not identified' is one the method's estimate does "
            "not determine: inverse RL's conditional logit knows the reward only up to a constant per "
            "prompt, so only its preference accuracy and EPIC (which removes each prompt's mean) measure it.",
            "Methods. " + " ".join(f"{r['method']}: {r['description']}." for r in board["rows"]),
            *_details(board["rows"]),
        ],
        tables=[
            (
                "Leaderboard",
                [
                    "method",
                    "model",
                    "supervised",
                    "Pearson",
                    "Spearman",
                    "Kendall",
                    "Pearson within each model's completions",
                    "preference accuracy",
                    "EPIC distance (lower is closer)",
                ],
                rows,
            )
        ],
    )


def _undefined(metric: dict[str, Any]) -> str:
    """Say how many bootstrap resamples left the metric undefined (its interval rests on the others)."""
    count = metric.get("n_nan_resamples", 0)
    return f" ({count} resamples undefined)" if count else ""


def irl_reward_section(export: dict[str, Any]) -> Section:
    """Where the exported inverse-RL reward is and how well the saved reward reproduces the fit."""
    return Section(
        "The inverse-RL reward, exported",
        paragraphs=[
            f"The {export['method']} reward, fitted on every evaluation prompt at block {export['layer']} "
            "of the tuned model (the block most leaderboard folds chose), is saved in the irl-reward "
            f"stage's folder under {export['folder']}/ (its control, the weights shuffled across the "
            f"features, under {export['shuffled_folder']}/); tune against it with irmscope tune --reward "
            "readout:FOLDER. It never saw the known reward, only which model wrote each completion, and "
            "like any IRL reward it is defined up to a constant per prompt and a positive scale. Check: "
            "rescored from scratch (a fresh forward pass), its within-prompt differences match the fit's on "
            f"the stored read-outs to {export['rescoring_deviation']:.1g} of their spread.",
        ],
    )
