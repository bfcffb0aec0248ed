"""Per-seed table, mean and spread of the planted replicates (experiments/planted_replicates.sh) and of the
noise null (experiments/noise_null.sh), read from their run folders. Prints markdown; ``--json`` also writes
the numbers.

    .venv/bin/python experiments/summarize_replicates.py runs/planted-replicates/seed* \
        [--noise runs/noise-null/seed*] [--json runs/replicates.json]

Each planted row: the lexicon's size, the steps tuned and why tuning stopped, the held-out tuning gain in the
planted reward with its bootstrap interval (``irmscope evaluate``), and from the audit (``irmscope audit
--reward``): Kendall tau between the audit's word values (relative shift beyond the drift of words of
similar frequency) and the planted values over all planted words, with its permutation p-value, the base
model's own tau (the control) and the paired tuned-minus-base gap; precision@20 of the most rewarded words
against the planted positive words, compared again from the audit's words.csv
(:func:`irmscope.audit.compare.table_precision`, whatever code wrote the audit): called words first, then
by their shift beyond the drift (the estimate rule, the audit's), with, beside it, the bound rule tried
on seeds 4-6 (the lower end of the interval of that shift), the shuffled-values control (the mean
precision of the same top words against the lexicon with its values shuffled, and the permutation
p-value), the base level and chance; how many words the noise floor called; and the word that
carries the largest share of the change in the completions. Where the audit ran its dictionaries (the
crosscoder and the dictionary of differences), their numbers follow in the tables the noise nulls' use.

Where a seed's folder also holds the whole pipeline's run (``pipeline/results.json``, from
experiments/planted_pipeline.sh), a second table gives the pipeline's headline numbers for that seed, on
the held-out planted words (split by lemma, with the pipeline's seed): the expected-count policy shift's
Kendall tau with its permutation p-value, the base model's level and the paired tuned-minus-base gap; the
IRM regression's tau (faithful variant) with its base level; and the share of the tuning gain that
ablating the attributed features removes (Table 5).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.audit.compare import lexicon_of, table_precision
from irmscope.audit.run import read_table
from irmscope.rewards import Lexicon, load_reward
from irmscope.runs import Run
from irmscope.stats import bootstrap_ci, paired_ratio_ci


def _read(path: Path) -> dict[str, Any]:
    """A finished step's JSON; a missing one ends the script in one line that names the step to run."""
    if not path.is_file():
        raise SystemExit(f"error: no {path}; finish that replicate (rerun its script: it resumes)")
    return json.loads(path.read_text(encoding="utf-8"))


def planted_row(folder: Path) -> dict[str, Any]:
    """One planted seed's numbers (see the module docstring), from its run folder."""
    manifest = _read(folder / "tuned" / "model" / "irmscope_manifest.json")
    evaluation = _read(folder / "evaluation.json")
    gain = evaluation["reward_gain"]
    audit = _read(folder / "audit" / "audit.json")
    comparison = audit["reward"]
    tuned, base = comparison["kendall"]["elicited"], comparison["kendall"]["base_level"]
    lexicon = Lexicon.from_tsv(folder / "lexicon.tsv")
    by_estimate, by_bound = precisions(folder, audit, lexicon)
    gained = audit["completions"]["gained"]
    n_words = len(lexicon)
    return {
        "seed": folder.name,
        "lexicon_words": n_words,
        "steps": manifest["steps_done"],
        "stop_reason": (manifest.get("stopping") or {}).get(
            "reason", "steps"
        ),  # older manifests: fixed steps
        "gain": gain["value"],
        "gain_interval": [gain["low"], gain["high"]],
        "tau": tuned["kendall_tau"],
        "tau_permutation_p": tuned["permutation_p"],
        "tau_words": tuned["n"],
        "base_tau": base["kendall_tau"],
        "tau_gap": comparison["tau_gap"]["value"],
        "tau_gap_interval": [comparison["tau_gap"]["low"], comparison["tau_gap"]["high"]],
        "precision_at_20": by_estimate["elicited"]["value"],
        "precision_at_20_by_bound": by_bound["elicited"]["value"],
        "shuffled_values_precision": by_estimate["shuffled_values"]["mean"],
        "shuffled_values_p": by_estimate["shuffled_values"]["p"],
        "base_precision_at_20": by_estimate["base_level"]["value"],
        "chance_precision": by_estimate["chance"],
        "n_called": audit["floor"]["n_called"],
        "top_gained_word": gained[0]["word"] if gained else None,
        "top_gained_share": gained[0]["share"] if gained else None,
        "retunes": retunes(folder, evaluation),
        # the audit's dictionaries on this seed, beside the noise nulls' (None for an audit without them)
        "inside": inside_row(audit, lexicon) if audit.get("inside") else None,
    }


def precisions(
    folder: Path, audit: dict[str, Any], lexicon: Lexicon
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Precision@20 of the audit's most rewarded words against the planted positive words, with its
    controls, compared again from the audit's words.csv whatever code wrote the audit: under the estimate
    rule and the bound rule (:func:`table_precision`)."""
    seed = audit.get("settings", {}).get("seed", 0)
    return table_precisions(_words_table(folder), lexicon, seed)


def _words_table(folder: Path) -> dict[str, Any]:
    """The audit's word table (its words.csv); a missing one ends the script in one line."""
    path = folder / "audit" / "words.csv"
    if not path.is_file():
        raise SystemExit(f"error: no {path}; rerun the audit of that replicate (rerun its script)")
    return read_table(path)


def table_precisions(
    table: dict[str, Any], lexicon: Lexicon, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """precision@20 of the rewarded side with its controls, under the estimate rule and the bound rule."""
    return tuple(  # type: ignore[return-value]
        table_precision(table, lexicon, seed=seed, uncalled_by=rule)["precision_rewarded"]
        for rule in ("estimate", "bound")
    )


#: the retunes of experiments/retune_export.sh, by export: (against the export, against its control)
RETUNES = {"audit": ("elicited", "shuffled"), "inverse RL": ("irl", "irl-shuffled")}


def original_evaluation(folder: Path) -> dict[str, Any]:
    """The original tuning's evaluation (its gain and per-prompt scores): a replicate's evaluation.json,
    or a pipeline run folder's evaluate stage (the VADER round trip)."""
    if (folder / "evaluation.json").is_file():
        return _read(folder / "evaluation.json")
    run = Run(folder, needs=("config", "manifest", "evaluation"))
    samples = run.stage("evaluate").samples
    return {
        "reward_gain": run.results["evaluation"]["reward_gain"],
        "samples": {"base_scores": samples.base_scores, "tuned_scores": samples.tuned_scores},
    }


def run_round_trip(folder: Path) -> dict[str, Any]:
    """The round trips of a pipeline run folder (experiments/retune_export.sh DIR): its gain and retunes."""
    original = original_evaluation(folder)
    return {
        "seed": folder.name,
        "gain": original["reward_gain"]["value"],
        "retunes": retunes(folder, original),
    }


def retunes(folder: Path, original: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Every retune of ``folder`` (:func:`retune_share`, None where not run), against its ``original``
    evaluation (:func:`original_evaluation`), read once."""
    return {kind: retune_share(folder, kind, original) for pair in RETUNES.values() for kind in pair}


def retune_share(folder: Path, kind: str, original: dict[str, Any]) -> dict[str, Any] | None:
    """The gain of the model retuned against an export (``kind``: "elicited", the audit's, or its control
    "shuffled"; "irl", the inverse-RL reward, or its control "irl-shuffled"; experiments/retune_export.sh)
    in the original reward, beside the original tuning's gain.

    Always: the paired difference (retuned gain - original gain) per prompt with its bootstrap interval.
    When the original gain's interval lies above 0, also the share: the ratio of the two mean gains with a
    paired percentile bootstrap over prompts (:func:`irmscope.stats.paired_ratio_ci`; a ratio whose
    denominator may cross 0 has no interval).
    Both evaluations sample the same base completions (same prompts, seed and base model)."""
    path = folder / f"retune-{kind}.json"
    if not path.is_file():
        return None
    retuned = _read(path)
    base, retuned_base = (np.asarray(e["samples"]["base_scores"]) for e in (original, retuned))
    if base.shape != retuned_base.shape or not np.allclose(base, retuned_base):
        raise SystemExit(f"error: {path} did not sample the original evaluation's base completions")
    gained = np.asarray(original["samples"]["tuned_scores"]) - base
    regained = np.asarray(retuned["samples"]["tuned_scores"]) - base
    out: dict[str, Any] = {
        "gain": retuned["reward_gain"],
        "difference": bootstrap_ci(regained - gained).as_dict(),
        "share": None,
        "interval": None,
    }
    if original["reward_gain"]["low"] > 0:
        share = paired_ratio_ci(regained, gained)
        out["share"], out["interval"] = share.value, [share.low, share.high]
    return out


def pipeline_row(folder: Path) -> dict[str, Any] | None:
    """One seed's pipeline numbers (see the module docstring), or None when the pipeline has not run."""
    path = folder / "pipeline" / "results.json"
    if not path.exists():
        return None
    results = _read(path)
    elicitation = results["elicitation"]
    shift = elicitation["policy_shift"]
    tuned_shift = shift["held_out_words"]["expected-count"]["all"]
    gap = elicitation["gap"]["policy_shift"]["held_out_words"]["expected-count"]["all"]
    irm = {model: elicitation[model]["agreement"]["faithful"]["real"]["all"] for model in ("tuned", "base")}
    attributed = results.get("validation", {}).get("table5", {}).get("attributed", {})
    removed = attributed.get("gain_removed")
    inside = (results.get("audit") or {}).get("inside")
    return {
        "seed": folder.name,
        "gain": results["evaluation"]["reward_gain"],
        "shift_tau": tuned_shift["kendall_tau"],
        "shift_permutation_p": tuned_shift["permutation_p"],
        "shift_words": tuned_shift["n"],
        "shift_base_tau": shift["base_level"]["held_out_words"]["expected-count"]["all"]["kendall_tau"],
        "shift_gap": [gap["value"], gap["low"], gap["high"]],
        "shift_gap_value": gap["value"],
        "irm_tau": irm["tuned"]["kendall_tau"],
        "irm_base_tau": irm["base"]["kendall_tau"],
        "gain_removed": None if removed is None else [removed["value"], removed["low"], removed["high"]],
        "inside": None
        if inside is None
        else inside_row(results["audit"], Lexicon.from_tsv(folder / "lexicon.tsv")),
    }


def inside_row(audit: dict[str, Any], lexicon: Lexicon) -> dict[str, Any]:
    """The audit's crosscoder on one seed: its site and fit; how many of the 10 most changed latents agree
    with the word-level implicit reward beyond the matched control (their promoted logits' Spearman rho
    above the 95th percentile of |rho| of the latents ranked next by decoder change: about 0.25 of 10 by
    chance); the baseline rho of the plain mean activation difference; and how many of the top-10
    promoted words of those latents the planted lexicon pays, beside chance (the share of audited words
    it pays, as the audit's reward comparison counts them)."""
    inside = audit["inside"]
    control = inside["control_spearman"]["matched"]["q95_abs"]
    latents = inside["changed_most"]
    promoted = [w["word"] for latent in latents for w in latent["promoted_words"]]
    return {
        "site": inside["site"],
        "fvu": inside["training"]["fvu"],
        "control_q95": control,
        "above_control": sum(
            control is not None and latent["reward_spearman"] > control for latent in latents
        ),
        "n_latents": len(latents),
        "mean_difference_rho": inside["mean_difference"]["reward_spearman"],
        "top_spearman": latents[0]["reward_spearman"] if latents else None,
        "top_words": [w["word"] for w in latents[0]["promoted_words"][:5]] if latents else [],
        "promoted_paid": sum(lexicon.lookup(word) > 0 for word in promoted),  # as the reward reads a word
        "n_promoted": len(promoted),
        "chance_paid": audit["reward"]["n_paid"] / audit["n_words"] if audit.get("reward") else None,
        "difference": difference_row(inside.get("difference_dictionary"), lexicon),
    }


def difference_row(difference: dict[str, Any] | None, lexicon: Lexicon) -> dict[str, Any] | None:
    """The audit's dictionary of tuned-minus-base differences on one seed (None before the audit had one):
    its fit; how many of the 10 latents writing most of the difference agree with the word-level implicit
    reward beyond its random control (rho above the control's 95th percentile of |rho|); the top latent's
    share of the difference, rho and promoted words; and how many of those latents' top-10 promoted words
    the planted lexicon pays."""
    if difference is None:
        return None
    control = difference["control_spearman"]["random"]["q95_abs"]
    latents = difference["writes_most"]
    promoted = [w["word"] for latent in latents for w in latent["promoted_words"]]
    return {
        "fvu": difference["training"]["fvu"]["difference"],
        "control_q95": control,
        "above_control": sum(
            control is not None and latent["reward_spearman"] > control for latent in latents
        ),
        "n_latents": len(latents),
        "top_share": latents[0]["share"] if latents else None,
        "top_spearman": latents[0]["reward_spearman"] if latents else None,
        "top_words": [w["word"] for w in latents[0]["promoted_words"][:5]] if latents else [],
        "promoted_paid": sum(lexicon.lookup(word) > 0 for word in promoted),
        "n_promoted": len(promoted),
    }


def pipeline_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | gain [95% CI] | policy shift tau (perm. p, words) | base tau | gap [95% CI]"
        " | IRM regression tau (base) | attributed ablation: gain removed [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        gain, gap, removed = r["gain"], r["shift_gap"], r["gain_removed"]
        removed_cell = (
            "not reported" if removed is None else f"{removed[0]:.0%} [{removed[1]:.0%}, {removed[2]:.0%}]"
        )
        lines.append(
            f"| {r['seed']} | {gain['value']:+.2f} [{gain['low']:+.2f}, {gain['high']:+.2f}]"
            f" | {r['shift_tau']:+.3f} ({r['shift_permutation_p']:.3f}, {r['shift_words']})"
            f" | {r['shift_base_tau']:+.3f} | {gap[0]:+.3f} [{gap[1]:+.3f}, {gap[2]:+.3f}]"
            f" | {r['irm_tau']:+.3f} ({r['irm_base_tau']:+.3f}) | {removed_cell} |"
        )
    if len(rows) > 1:
        lines += ["", *spread_table(rows, PIPELINE_SPREAD)]
    return "\n".join(lines + inside_markdown(rows))


def inside_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The crosscoder's and the dictionary of differences' tables for the rows that have them."""
    lines: list[str] = []
    inside = [r for r in rows if r["inside"]]
    if inside:
        lines += [
            "",
            "| seed | crosscoder site | FVU base / tuned | most changed latents above the matched control "
            "(its q95 of abs rho) | mean-difference rho | top latent: rho, promoted words "
            "| promoted words paid (chance) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in inside:
            i = r["inside"]
            lines.append(
                f"| {r['seed']} | {i['site']} | {i['fvu']['base']:.2f} / {i['fvu']['tuned']:.2f}"
                f" | {i['above_control']} of {i['n_latents']} ({_number(i['control_q95'], '.3f')})"
                f" | {i['mean_difference_rho']:+.3f}"
                f" | {_number(i['top_spearman'], '+.3f')}: {', '.join(i['top_words'])}"
                f" | {i['promoted_paid']} of {i['n_promoted']} ({_number(i['chance_paid'], '.3f')}) |"
            )
    differences = [r for r in inside if r["inside"].get("difference")]
    if differences:
        lines += [
            "",
            "| seed | difference dictionary FVU | top latents above the random control (its q95 of abs rho) "
            "| top latent: share, rho, promoted words | promoted words paid (chance) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in differences:
            d, chance = r["inside"]["difference"], r["inside"]["chance_paid"]
            lines.append(
                f"| {r['seed']} | {d['fvu']:.2f} | {d['above_control']} of {d['n_latents']}"
                f" ({_number(d['control_q95'], '.3f')}) | {_number(d['top_share'], '.1%')},"
                f" {_number(d['top_spearman'], '+.3f')}: {', '.join(d['top_words'])}"
                f" | {d['promoted_paid']} of {d['n_promoted']} ({_number(chance, '.3f')}) |"
            )
    return lines


def noise_row(folder: Path, lexicons: Sequence[Path] = ()) -> dict[str, Any]:
    """One noise-tuned model's floor: how many words it called (every one a false discovery); precision@20
    of its audit's words against each of ``lexicons`` (planted lexicons it never saw: what the ranking
    finds with no reward behind it), under the estimate and the bound rule (:func:`table_precisions`);
    and, once ``noise_null.sh`` has run the audit with its dictionaries against a planted lexicon the model
    never saw (``audit-inside*/``: at the audit's own site, and at the planted seeds' site), the
    dictionaries' numbers on it, per folder: the floor under the planted seeds' rows."""
    audit = _read(folder / "audit" / "audit.json")
    floor, seed = audit["floor"], audit.get("settings", {}).get("seed", 0)
    table = _words_table(folder) if lexicons else None
    against = []
    for path in lexicons:
        by_estimate, by_bound = table_precisions(table, Lexicon.from_tsv(path), seed)
        against.append(
            {
                "lexicon": str(path),
                "precision_at_20": by_estimate["elicited"]["value"],
                "precision_at_20_by_bound": by_bound["elicited"]["value"],
            }
        )
    inside = {}
    for inside_audit in sorted(folder.glob("audit-inside*/audit.json")):
        other = _read(inside_audit)
        lexicon = lexicon_of(load_reward(other["settings"]["reward"]))  # the reward the audit compared with
        inside[inside_audit.parent.name] = inside_row(other, lexicon)
    return {
        "seed": folder.name,
        "n_called": floor["n_called"],
        "n_rewarded": floor["n_rewarded"],
        "n_penalised": floor["n_penalised"],
        "q": floor["q"],
        "precision_against": against,
        "inside": inside,
    }


def spread(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Mean, standard deviation (n - 1) and range of one column over seeds."""
    values = [float(row[key]) for row in rows]
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values)}


#: the planted columns summarised over seeds
SPREAD = (
    "gain", "tau", "base_tau", "tau_gap", "precision_at_20", "precision_at_20_by_bound",
    "shuffled_values_precision",
)  # fmt: skip


#: the pipeline columns summarised over seeds
PIPELINE_SPREAD = ("shift_tau", "shift_base_tau", "shift_gap_value", "irm_tau", "irm_base_tau")


def spread_table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[str]:
    """Markdown lines: mean, sd, min and max of each of ``keys`` over the rows (seeds)."""
    lines = ["| over seeds | mean | sd | min | max |", "| --- | --- | --- | --- | --- |"]
    for key in keys:
        s = spread(rows, key)
        lines.append(f"| {key} | {s['mean']:+.3f} | {s['sd']:.3f} | {s['min']:+.3f} | {s['max']:+.3f} |")
    return lines


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _interval(pair: list[float]) -> str:
    return f"[{pair[0]:+.2f}, {pair[1]:+.2f}]"


def _retune_cell(retune: dict[str, Any] | None) -> str:
    if retune is None:
        return "not run"
    gain = retune["gain"]
    text = f"{gain['value']:+.2f} [{gain['low']:+.2f}, {gain['high']:+.2f}]"
    if retune["share"] is None:
        return f"{text}; no share (the original gain's interval includes 0)"
    low, high = retune["interval"]
    return f"{text}; {retune['share']:.0%} [{low:.0%}, {high:.0%}]"


def retune_table(rows: list[dict[str, Any]]) -> list[str]:
    """The round trips of ``rows`` (planted seeds or run folders) as markdown lines, after a blank line;
    none when no row has a retune."""
    retuned = [
        (r, export, pair)
        for r in rows
        for export, pair in RETUNES.items()
        if any(r["retunes"][k] for k in pair)
    ]
    if not retuned:
        return []
    lines = [
        "",
        "| seed | export | original gain | retuned on the export: gain; share of the original [95% CI] "
        "| on the shuffled export |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r, export, pair in retuned:
        cells = [_retune_cell(r["retunes"][kind]) for kind in pair]
        lines.append(f"| {r['seed']} | {export} | {r['gain']:+.2f} | {cells[0]} | {cells[1]} |")
    return lines


def markdown(rows: list[dict[str, Any]], noise: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | words | steps | gain [95% CI] | tau (perm. p) | base tau | gap [95% CI]"
        " | P@20 (bound rule) | shuffled values (p) | base, chance | called | top word (share) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['lexicon_words']} | {r['steps']}"
            f" | {r['gain']:+.2f} {_interval(r['gain_interval'])}"
            f" | {r['tau']:+.3f} ({r['tau_permutation_p']:.3f}) | {r['base_tau']:+.3f}"
            f" | {r['tau_gap']:+.3f} {_interval(r['tau_gap_interval'])}"
            f" | {r['precision_at_20']:.2f} ({r['precision_at_20_by_bound']:.2f})"
            f" | {r['shuffled_values_precision']:.2f} ({r['shuffled_values_p']:.3f})"
            f" | {r['base_precision_at_20']:.2f}, {r['chance_precision']:.2f}"
            f" | {r['n_called']} | {r['top_gained_word']} ({r['top_gained_share']:.0%}) |"
        )
    if len(rows) > 1:
        lines += [
            "",
            *spread_table(rows, SPREAD + ("n_called",)),
        ]
    lines += retune_table(rows)
    if noise:
        lines.append("")
        lines.append(
            "| noise seed | words called | rewarded | penalised | q "
            "| P@20 against planted lexicons it never saw (bound rule) |"
        )
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for r in noise:
            against = r["precision_against"]
            estimate = ", ".join(f"{a['precision_at_20']:.2f}" for a in against) or "not asked"
            bound = ", ".join(f"{a['precision_at_20_by_bound']:.2f}" for a in against)
            lines.append(
                f"| {r['seed']} | {r['n_called']} | {r['n_rewarded']} | {r['n_penalised']} | {r['q']}"
                f" | {estimate}{f' ({bound})' if against else ''} |"
            )
    inside = [{"seed": r["seed"], "inside": r["inside"]} for r in rows if r["inside"]] + [
        {"seed": f"noise {r['seed']} ({name})", "inside": row}
        for r in noise
        for name, row in r["inside"].items()
    ]
    return "\n".join(lines + inside_markdown(inside))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("planted", nargs="*", type=Path, help="planted seed folders")
    parser.add_argument(
        "--runs", nargs="*", type=Path, default=[], help="pipeline run folders with round trips (runs/vader)"
    )
    parser.add_argument("--noise", nargs="*", type=Path, default=[], help="noise-null seed folders")
    parser.add_argument(
        "--noise-lexicons",
        nargs="*",
        type=Path,
        default=[],
        help="lexicons the noise-tuned models never saw: their precision@20, the ranking's control",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if not args.planted and not args.runs:
        parser.error("give planted seed folders, --runs run folders, or both")
    rows = [planted_row(folder) for folder in args.planted]
    noise = [noise_row(folder, args.noise_lexicons) for folder in args.noise]
    pipelines = [row for row in map(pipeline_row, args.planted) if row is not None]
    round_trips = [run_round_trip(folder) for folder in args.runs]
    if rows or noise:
        print(markdown(rows, noise))
    if round_trips:
        print("\n".join(retune_table(round_trips)))
    if pipelines:
        print("\n" + pipeline_markdown(pipelines))
    if args.json:
        summary = {"planted": rows, "noise": noise, "pipeline": pipelines, "runs": round_trips}
        if len(pipelines) > 1:
            summary["pipeline_spread"] = {k: spread(pipelines, k) for k in PIPELINE_SPREAD}
        if len(rows) > 1:
            summary["spread"] = {k: spread(rows, k) for k in SPREAD}
        args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
