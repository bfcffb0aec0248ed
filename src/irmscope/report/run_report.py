"""The report of a pipeline run: Table 7 (base vs tuned reward), curves, divergence, examples, manifest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.artifacts import Samples
from irmscope.report.audit import audit_sections
from irmscope.report.elicitation import elicitation_sections
from irmscope.report.headline import headline
from irmscope.report.html import Section, interval, write_report
from irmscope.report.interpretation import interpretation_sections
from irmscope.report.plots import divergence_bars, reward_histogram, training_curves
from irmscope.report.probes import (
    attribution_section,
    irl_reward_section,
    leaderboard_section,
    probe_section,
    steering_section,
)


def _evaluation_section(results: dict[str, Any], samples: Samples) -> Section:
    ev = results["evaluation"]
    reward = results["subject"]["reward"]
    base_scores = samples.scores("base")
    if not samples.has_tuned:
        return Section(
            "Base model reward",
            paragraphs=[
                f"Mean {reward} reward of {len(base_scores)} completions of the base model: "
                f"{interval(ev['base_mean_reward'])} (95% bootstrap CI). No tuned model in this run."
            ],
            figures=[("Reward distribution", reward_histogram({"base": base_scores}, reward))],
        )
    tuned_scores = samples.scores("tuned")
    rows = [
        ["mean reward, base model", interval(ev["base_mean_reward"])],
        ["mean reward, tuned model", interval(ev["tuned_mean_reward"])],
        ["gain (paired over prompts)", interval(ev["reward_gain"])],
    ]
    likelihoods = "kl_tuned_to_base_per_token" in ev  # from the read-samples stage: absent while it runs
    if likelihoods:
        rows += [
            ["KL(tuned ‖ base) per token, on tuned completions", interval(ev["kl_tuned_to_base_per_token"])],
            [
                "base-model perplexity on tuned completions",
                f"{ev['base_perplexity_on_tuned_completions']:.2f}",
            ],
            [
                "base-model perplexity on its own completions (control)",
                f"{ev['base_perplexity_on_base_completions']:.2f}",
            ],
        ]
    rows += [
        ["distinct word bigrams, tuned completions", f"{ev['distinct_bigrams_tuned']:.3f}"],
        ["distinct word bigrams, base completions (control)", f"{ev['distinct_bigrams_base']:.3f}"],
    ]
    return Section(
        "Tuning result (the paper's Table 7)",
        paragraphs=[
            f"{ev['n_prompts']} held-out prompts, one sampled completion per model each, scored with the "
            f"{reward} reward. Intervals are 95% bootstrap intervals. The perplexity rows are a fluency "
            "control against word salad (far less likely under the base model than its own text); the "
            "distinct-bigram rows catch the other way to game a lexicon reward, repeating one word, which "
            "the base model finds more predictable than its own text."
            + _sampling_note(ev)
            + (
                ""
                if likelihoods
                else " The KL and perplexity rows come with the read-samples stage, which had not finished "
                "when this page was written."
            )
        ],
        tables=[("Base vs tuned", ["quantity", "value [95% CI]"], rows)],
        figures=[
            (
                "Reward of base and tuned completions",
                reward_histogram({"base": base_scores, "tuned": tuned_scores}, reward),
            )
        ],
    )


def _sampling_note(evaluation: dict[str, Any]) -> str:
    """The precision the completions were sampled in, where it was not float32."""
    if evaluation.get("sampling_precision", "float32") == "float32":
        return ""
    return (
        f" Completions were sampled with {evaluation['sampling_precision']} matrix products "
        "(generation.precision; faster on this CPU); every log-probability compared (KL, perplexity, the "
        "policy shift) was computed in float32."
    )


def _headline_section(results: dict[str, Any]) -> Section:
    """The lines a reader needs first (:mod:`irmscope.report.headline`): did tuning install its reward?"""
    return Section(
        "Did tuning install its reward?", paragraphs=list(results.get("headline") or headline(results))
    )


def _examples_section(samples: Samples) -> Section:
    key = "tuned" if samples.has_tuned else "base"
    scores = samples.scores(key)
    order = np.argsort(scores)
    rows = [
        [f"{scores[i]:+.2f}", samples.prompts[i], samples.completions(key)[i]]
        for i in (*order[:3], *order[-3:])
    ]
    if key == "tuned":
        rows = [
            [*row, samples.base_completions[i]]
            for row, i in zip(rows, (*order[:3], *order[-3:]), strict=True)
        ]
    header = ["reward", "prompt", f"{key} completion"] + (
        ["base completion (same prompt)"] if key == "tuned" else []
    )
    return Section("Examples", tables=[(f"Lowest- and highest-reward {key} completions", header, rows)])


def _sae_section(results: dict[str, Any]) -> Section:
    rows = []
    for label, per_site in results["saes"].items():
        rows += [
            [
                label,
                site,
                m["d_sae"],
                m["fvu"],
                m.get("fvu_without_first_token", "n/a"),
                m["l0"],
                m["dead_fraction"],
                m["n_tokens"],
                results["activations"][label]["train_rows"],
            ]
            for site, m in per_site.items()
        ]
    return Section(
        "Sparse autoencoders (§4.2)",
        paragraphs=[
            "One SAE per studied site and model, trained on held-out reviews; FVU (fraction of variance "
            "unexplained), L0 (active latents per token) and the dead fraction (latents that never fire) "
            "are measured on other reviews the SAE never saw. In later layers each text's first token often "
            "carries huge 'attention sink' activations that hold most of the variance, so FVU over all "
            "tokens can look excellent while the rest is poorly reconstructed: read the column without it."
        ],
        tables=[
            (
                "SAE quality",
                [
                    "model",
                    "site",
                    "latents",
                    "FVU",
                    "FVU without first token",
                    "L0",
                    "dead",
                    "tokens measured",
                    "tokens trained",
                ],
                rows,
            )
        ],
    )


def write_run_report(
    root: Path,
    results: dict[str, Any],
    samples: Samples,
    tune_manifest: dict[str, Any] | None,
    going_on: RunGoingOn | None = None,
) -> Path:
    """Write ``report.html`` for a run: one section per stage that produced a result, in the order a
    reader checks them (what changed, how it was trained, where, then the methods' evidence).

    With ``going_on`` the page is the report of a run still going: it says so first, and shows only the
    stages finished so far."""
    sections = [_headline_section(results), _evaluation_section(results, samples)]
    if going_on is not None:
        sections.insert(0, _going_on_section(going_on))
    if tune_manifest:
        sections.append(_tuning_section(tune_manifest))
    if results.get("divergence"):
        sections.append(_divergence_section(results["divergence"]))
    sections.append(_examples_section(samples))
    if results.get("saes"):
        sections.append(_sae_section(results))
    if results.get("elicitation"):
        sections.extend(elicitation_sections(results["elicitation"], results["subject"]["reward"]))
    if results.get("interpretation"):
        sections.extend(
            interpretation_sections(
                results["interpretation"], results.get("validation"), results["subject"]["reward"]
            )
        )
    reward = results["subject"]["reward"]
    if results.get("probes"):
        sections.append(probe_section(results["probes"]))
    if results.get("steering"):
        sections.append(steering_section(results["steering"], reward))
    if results.get("attribution"):
        sections.append(attribution_section(results["attribution"], reward))
    if results.get("leaderboard"):
        sections.append(leaderboard_section(results["leaderboard"], reward))
    if results.get("irl_reward"):
        sections.append(irl_reward_section(results["irl_reward"]))
    if results.get("audit"):
        sections.extend(audit_sections(results["audit"]))
    manifest = results["manifest"]
    sections.append(_manifest_section(manifest))
    title = f"irmscope: {results['subject']['base']}" + (" → tuned" if results["subject"]["tuned"] else "")
    return write_report(
        root / "report.html",
        title,
        sections,
        subtitle=f"preset {results['config']['preset']}, seed {manifest['seed']}",
    )


@dataclass(frozen=True)
class RunGoingOn:
    """Where a run was when a report of its finished stages was written: the stage folder that had just
    finished, and the folders still to run."""

    after: str
    pending: Sequence[str]


def _going_on_section(going_on: RunGoingOn) -> Section:
    """The banner of a report written while the run went on, naming what it does not show."""
    return Section(
        "The run was still going: this report shows the stages finished so far",
        paragraphs=[
            f"Written when stage {going_on.after} had finished, with {len(going_on.pending)} stage folders "
            f"still to run ({', '.join(going_on.pending)}). Their sections are missing here, and the "
            "headline below may gain lines. When the run ends, the whole report is written to report.html "
            "in the run folder and this page is removed."
        ],
    )


def _tuning_section(tune_manifest: dict[str, Any]) -> Section:
    """How the subject was fine-tuned: the algorithm, reward and hyperparameters, so a reader can tell
    what the later sections should find, and the training curves when the run recorded them."""
    hp = tune_manifest["hyperparameters"]
    return Section(
        "Fine-tuning",
        paragraphs=[
            f"{tune_manifest['algorithm'].upper()} against '{tune_manifest['reward']['name']}' for "
            f"{tune_manifest['steps_done']} steps in {tune_manifest['train_seconds']:.0f} s "
            f"(learning rate {hp['learning_rate']:g}, KL coefficient {hp['beta']:g}, batch "
            f"{hp['batch_size']}, group {hp['group_size']}, {hp['max_completion_tokens']}-token "
            "completions). Reward being optimised: " + tune_manifest["reward"]["description"]
        ],
        figures=[("Training curves", training_curves(tune_manifest["curves"]))]
        if tune_manifest["curves"]
        else [],
    )


def _divergence_section(div: dict[str, Any]) -> Section:
    """Which layers' weights moved most, the place the SAE and probe sections look for the change."""
    return Section(
        "Per-layer parameter divergence (§4.2, Appendix G)",
        paragraphs=[
            "Sum over each block's tensors of the L2 distance between tuned and base weights. Top "
            f"layers: {', '.join(map(str, div['top_layers']))}."
        ],
        figures=[("Parameter divergence by layer", divergence_bars(div["per_layer"], div["top_layers"]))],
    )


def _provenance(manifest: dict[str, Any]) -> str:
    """One sentence naming the code and the machine of the run (``irmscope.provenance``); a results file
    written before they were recorded says so."""
    if "code" not in manifest:
        return "The code's commit and the machine were not recorded (a results file from before 2026-12-04)."
    code, machine = manifest["code"], manifest["machine"]
    if code is None:
        said = "Code: no git commit (an installed package, or git unavailable; the package version is below)."
    else:
        changes = {True: ", with uncommitted changes", False: "", None: ", changes unknown"}
        modified = changes[code["modified"]]
        said = f"Code: commit {code['commit'][:12]}{modified}."
    bfloat16 = "native bfloat16" if machine["native_bfloat16"] else "no native bfloat16"
    return (
        f"{said} Machine: {machine['cpu']} ({machine['kind']}, {bfloat16}), {machine['cores']} cores, "
        f"{machine['torch_threads']} torch threads. Stages marked cached below were computed by an earlier "
        "run in this folder, possibly by other code or on another machine."
    )


def _manifest_section(manifest: dict[str, Any]) -> Section:
    """The code, the machine, the package versions and each stage's cache key and cost, so a run can be
    reproduced and its cached stages told from the computed ones."""
    return Section(
        "Run manifest",
        paragraphs=[_provenance(manifest)],
        tables=[
            (
                "Package versions",
                ["package", "version"],
                [[k, v] for k, v in manifest["versions"].items()],
            ),
            (
                "Stages",
                ["stage", "key", "seconds to compute", "this run"],
                [
                    [
                        k,
                        v["key"],
                        v["seconds"] if v["seconds"] is not None else "-",
                        "cached" if v["cached"] else "computed",
                    ]
                    for k, v in manifest["stages"].items()
                ],
            ),
        ],
    )
