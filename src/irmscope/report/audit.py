"""The page ``irmscope audit`` writes: which words tuning rewarded and penalised (above the noise floor,
beside the base model's own frequency), where the change in the completions comes from, reward-hacking
signs, and, with a known lexicon reward, how far the elicited values are from it beside the base level."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from irmscope.audit.inside import MIN_FIRING_TOKENS
from irmscope.report.html import Section, interval, write_report
from irmscope.report.interpretation import shaded_contexts

_WORD_HEADER = [
    "word",
    "relative shift beyond the drift",
    "relative shift (log-factor) [95% CI]",
    "Δ expected count per text [95% CI]",
    "mean log-ratio [95% CI]",
    "base expected count per text (control)",
    "z (empirical null)",
    "BH-adjusted p",
    "completions: base → tuned count",
    "share of the count change",
]


def _ci(row: dict[str, Any], key: str, low: str, high: str, digits: int = 4) -> str:
    f = f"{{:+.{digits}f}}"
    return f"{f.format(row[key])} [{f.format(row[low])}, {f.format(row[high])}]"


def _word_rows(rows: list[dict[str, Any]]) -> list[list[object]]:
    return [
        [
            r["word"],
            f"{r['beyond_drift']:+.3f}",
            _ci(r, "relative_shift", "relative_low", "relative_high", 3),
            _ci(r, "expected_count_shift", "expected_count_low", "expected_count_high"),
            _ci(r, "mean_log_ratio", "mean_log_ratio_low", "mean_log_ratio_high", 3),
            f"{r['base_count']:.4g}",
            r["z"],
            f"{r['q_value']:.2g}",
            f"{r['base_completion_count']} → {r['tuned_completion_count']}",
            r["completion_share"],
        ]
        for r in rows
    ]


def _paired_row(name: str, m: dict[str, Any]) -> list[object]:
    return [name, m["base"], m["tuned"], interval(m["difference"], signed=True)]


def _floor_section(result: dict[str, Any]) -> Section:
    floor, settings = result["floor"], result.get("settings", {})
    null = floor["null"]
    shared = result["shared_log_ratio_per_position"]
    return Section(
        "What did tuning reward?",
        paragraphs=[
            f"Tuned model {settings.get('tuned', '?')} against its base {settings.get('base', '?')}: "
            f"{result['n_prompts']} held-out prompts, one completion of {result['completion_tokens']} tokens "
            f"from each model; every one of the {result['n_words']} single-token words of the vocabulary "
            "is scored at every position of the prompt + completion texts of both models.",
            "Noise floor: each word's relative shift (the log-factor by which tuning multiplied its rate, "
            "averaged where the base model would write it, shrunk towards 0 below the uniform rate "
            f"{floor['uniform_count']:.3g} per text) is tested against an empirical null: the drift shared "
            f"by the {null['window']} words the base model writes about as often (running median and MAD, "
            "corrected by Efron's truncated-normal fit), plus the word's own sampling noise. The null's "
            f"centre runs from {null['centre_range'][0]:+.3f} to {null['centre_range'][1]:+.3f} across "
            f"frequencies, its drift spread has median {null['median_drift_sd']:.3f}. Assumption: at every "
            "frequency most words are not rewarded. A word is called rewarded or penalised when its "
            f"Benjamini–Hochberg adjusted p-value is at most q = {floor['q']}. Called: {floor['n_called']} "
            f"({floor['n_rewarded']} rewarded, {floor['n_penalised']} penalised); in expectation at most "
            f"{floor['expected_false_at_most']:.2f} of them are false. Controls: with the base model as its "
            "own 'tuned' model every shift is exactly zero and nothing is called; the base expected count "
            "stands beside every word; the naive ranking below shows what the floor keeps off the top.",
            "The median word's log-ratio at each position (the shift every word shares, removed first) "
            "averages "
            f"{interval(shared, signed=True)} nats per position.",
        ],
    )


def _completion_section(result: dict[str, Any]) -> Section:
    c = result["completions"]
    rep, length = c["repetition"], c["length"]
    changes = [
        [
            r["word"],
            r["base_count"],
            r["tuned_count"],
            interval(r["delta_per_completion"], signed=True),
            r["share"],
        ]
        for r in c["gained"] + c["lost"]
    ]
    measures = [
        _paired_row("distinct words per completion (fraction)", rep["distinct_unigrams"]),
        _paired_row("distinct word bigrams per completion (fraction)", rep["distinct_bigrams"]),
        _paired_row("longest run of one word", rep["longest_run"]),
        _paired_row("words per completion", length["words"]),
        _paired_row("characters per completion", length["characters"]),
        [
            "distinct word bigrams, pooled",
            rep["pooled_distinct_bigrams"]["base"],
            rep["pooled_distinct_bigrams"]["tuned"],
            "",
        ],
        ["distinct words, all completions", c["vocabulary"]["base"], c["vocabulary"]["tuned"], ""],
    ]
    return Section(
        "Where the change comes from, and reward-hacking signs",
        paragraphs=[
            f"Word counts in the {c['n_completions']} sampled completions of each model (same prompts and "
            f"seed). A word's share is its count change over the sum of all words' absolute changes "
            f"({c['total_abs_change']}); the 10 largest changes hold {c['top_share']:.0%} of it. A policy "
            "gaming a lexicon reward concentrates the change on a few words and repeats them.",
        ],
        tables=[
            (
                "Largest count changes in the sampled completions (base is the control)",
                ["word", "base count", "tuned count", "tuned − base per completion [95% CI]", "share"],
                changes,
            ),
            (
                "Repetition, length and vocabulary (base is the control; differences paired per prompt)",
                ["measure", "base", "tuned", "tuned − base [95% CI]"],
                measures,
            ),
        ],
    )


def _agreement_rows(reward: dict[str, Any]) -> list[list[object]]:
    """The reward section's summary table: each statistic, elicited, at the base level and by chance."""
    kendall, gap = reward["kendall"], reward["tau_gap"]
    pr, pp = reward["precision_rewarded"], reward["precision_penalised"]

    def tau(a: dict[str, Any]) -> str:
        return f"{a['kendall_tau']:+.3f} [{a['kendall_ci'][0]:+.3f}, {a['kendall_ci'][1]:+.3f}]"

    def precision(p: dict[str, Any]) -> str:
        return f"{p['value']:.2f} (k={p['k']})"

    return [
        [
            f"Kendall tau over the reward's {reward['n_single_token_words']} single-token words [95% CI]",
            tau(kendall["elicited"]),
            tau(kendall["base_level"]),
            "0",
        ],
        [
            "tau permutation p-value",
            kendall["elicited"]["permutation_p"],
            kendall["base_level"]["permutation_p"],
            "",
        ],
        ["tau(elicited) − tau(base level), paired [95% CI]", interval(gap, signed=True), "", "0"],
        [
            "precision@k, top words vs words the reward pays",
            precision(pr["elicited"]),
            precision(pr["base_level"]),
            f"{pr['chance']:.3f}",
        ],
        [
            "precision@k, bottom words vs words the reward penalises",
            precision(pp["elicited"]),
            precision(pp["base_level"]),
            f"{pp['chance']:.3f}",
        ],
        *(
            [
                f"precision@k of the same {side} words, the reward's values shuffled: mean (permutation p)",
                f"{p['shuffled_values']['mean']:.2f} (p {p['shuffled_values']['p']:.3f})",
                "",
                "",
            ]
            for side, p in (("top", pr), ("bottom", pp))
            if "shuffled_values" in p  # audits written before the control have none
        ),
        [
            "paid words called rewarded",
            f"{reward['n_paid_called']} of {reward['n_paid']}",
            "",
            "",
        ],
        ["called rewarded but not paid", f"{reward['n_called_unpaid']} of {reward['n_called']}", "", ""],
    ]


def _reward_section(reward: dict[str, Any]) -> Section:
    header = ["word", "reward value", "elicited value (relative shift beyond the drift)", "base count"]

    def rows(items: list[dict[str, Any]]) -> list[list[object]]:
        return [
            [r["word"], r["reward_value"], f"{r['elicited_value']:+.3f}", f"{r['base_count']:.4g}"]
            for r in items
        ]

    return Section(
        f"Against the known reward ({reward['lexicon']})",
        paragraphs=[
            "Elicited values are the relative shifts beyond the drift of all audited words; the base level "
            "uses the "
            "base model's own expected counts as values (what word frequency alone recovers, with no "
            "tuning). precision@k ranks the whole vocabulary: the called words first, then the rest, "
            "all by their elicited values; k is at most the number "
            "of paid (penalised) vocabulary words. Its shuffled-values control scores the same words "
            "against the reward with its values shuffled among its words: a ranking that finds the "
            "reward's words without their signs does as well there.",
        ],
        tables=[
            (
                "Agreement with the reward",
                ["statistic", "elicited", "base level (control)", "chance"],
                _agreement_rows(reward),
            ),
            (
                "Called rewarded, not paid by the reward (hacks or generalisation)",
                header,
                rows(reward["unpaid_rewarded"]),
            ),
            ("Paid by the reward, not called rewarded (ignored)", header, rows(reward["paid_ignored"])),
        ],
    )


_LATENT_HEADER = [
    "latent",
    "decoder change",
    "relative decoder norm (tuned)",
    "decoder cosine",
    "firing frequency: base → tuned completions",
    "mean activation: base → tuned completions",
    "tuned − base completion, paired per prompt [95% CI]",
    "promoted words (implicit reward)",
    "Spearman(promoted logit, implicit reward)",
]


def _latent_rows(latents: list[dict[str, Any]]) -> list[list[object]]:
    return [
        [
            r["latent"],
            f"{r['decoder_change']:.3f}",
            f"{r['relative_decoder_norm']:.3f}",
            f"{r['decoder_cosine']:+.2f}",
            f"{r['frequency']['base']:.2%} → {r['frequency']['tuned']:.2%}",
            f"{r['mean_activation']['base']:.3g} → {r['mean_activation']['tuned']:.3g}",
            interval(r["paired_change"], signed=True),
            ", ".join(f"{w['word']} ({w['implicit_reward']:+.2f})" for w in r["promoted_words"][:6]),
            f"{r['reward_spearman']:+.3f}",
        ]
        for r in latents
    ]


def _latent_dashboard(latent: dict[str, Any]) -> str:
    words = ", ".join(html.escape(w["word"]) for w in latent["promoted_words"][:8])
    sources = ", ".join(c["model"] for c in latent["contexts"])
    return (
        f"<div class='feature'><b>latent {latent['latent']}</b> (decoder change "
        f"{latent['decoder_change']:.2f}, relative decoder norm {latent['relative_decoder_norm']:.2f}; "
        f"its change promotes {words}; strongest tokens in: {sources})"
        f"{shaded_contexts(latent['contexts'])}</div>"
    )


def _spread_text(name: str, spread: dict[str, Any]) -> str:
    if not spread["n_latents"]:
        return f"no {name} latents to compare"
    return (
        f"{spread['n_latents']} {name} latents: median |rho| {spread['median_abs']:.3f}, 95th percentile "
        f"{spread['q95_abs']:.3f}"
    )


def _direction_row(name: str, direction: dict[str, Any]) -> list[object]:
    words = ", ".join(f"{w['word']} ({w['implicit_reward']:+.2f})" for w in direction["promoted_words"][:6])
    return [name, words, f"{direction['reward_spearman']:+.3f}"]


def _inside_section(inside: dict[str, Any]) -> Section:
    counts, training, control = inside["relative_norm_counts"], inside["training"], inside["control_spearman"]
    cc, change = inside["crosscoder"], inside["decoder_change_spread"]
    most, active = inside["changed_most"], inside["more_active_on_tuned_completions"]
    shown = most[:3] + [r for r in active[:3] if r not in most[:3]]
    spread = (
        f"median {change['median']:.3f}, 99th percentile {change['q99']:.3f}"
        if change["median"] is not None
        else "-"
    )
    return Section(
        "What changed inside: a crosscoder at the top-divergence site",
        paragraphs=[
            f"One TopK crosscoder ({cc['d_sae']} latents, k = {cc['k']}, {cc['epochs']} epochs) reads and "
            f"reconstructs both models' activations at {inside['site']} on the same {inside['n_tokens']} "
            f"tokens of the {inside['n_texts']} prompt + completion texts (each prompt's tokens once; the "
            "first token of each text left out). Fraction of variance unexplained: base "
            f"{training['fvu']['base']:.3f}, tuned {training['fvu']['tuned']:.3f}; "
            f"{training['dead_latents']} latents dead at the end of training.",
            f"Of the {inside['n_ranked']} latents that fired on at least {MIN_FIRING_TOKENS} tokens, by "
            "relative decoder norm ‖d_tuned‖ / (‖d_tuned‖ + ‖d_base‖): "
            f"{counts['tuned_only']} tuned-only (> 0.9), "
            f"{counts['tuned_leaning']} tuned-leaning (0.7–0.9), {counts['shared']} shared (0.3–0.7), "
            f"{counts['base_leaning']} base-leaning, {counts['base_only']} base-only (< 0.1). Every latent "
            "starts shared (equal decoder rows), so the norm moves only with the data. The decoder change "
            "‖d_tuned − d_base‖ / (‖d_tuned‖ + ‖d_base‖) also sees a shared latent whose tuned half writes "
            f"another direction; over the ranked latents it has {spread}. Both are descriptive, with no "
            "noise floor of their own: a latent near the median is not known to have changed.",
            "Promoted words: what tuning changed in the latent's output (its tuned decoder row less its "
            "base row) through the final norm and the unembedding (the logit lens, weak at early blocks), "
            "with each word's implicit reward from the word-level audit (its relative shift beyond the "
            "drift). The Spearman correlation over every audited word says how far the latent's change "
            "agrees with the word-level shift; most words have shifts near 0, so it is dominated by their "
            "bulk. Controls, the studied latents left out of both: "
            f"{_spread_text('matched', control['matched'])} (the next ones by decoder change); "
            f"{_spread_text('random', control['random'])}. Any sizeable part of the tuned-minus-base "
            "difference agrees with a log-ratio reward to some degree, so the two rows below the tables "
            "are the bar a latent has to clear: the change every token shares (the difference of the two "
            "decoder biases) and the plain mean activation difference, with no crosscoder at all.",
            "The second table ranks latents by how much more they fire on the tuned model's completions "
            "than on the base model's, paired per prompt (completion tokens only): it describes what the "
            "tuned policy writes, read by a code both models share, not what changed inside. Its "
            "intervals are not adjusted for picking the top of all latents.",
        ],
        tables=[
            ("Latents tuning changed most (largest decoder change)", _LATENT_HEADER, _latent_rows(most)),
            (
                "Latents more active on the tuned model's completions (largest paired change)",
                _LATENT_HEADER,
                _latent_rows(active),
            ),
            (
                "Baselines: whole-difference directions through the same logit lens",
                [
                    "direction",
                    "promoted words (implicit reward)",
                    "Spearman(promoted logit, implicit reward)",
                ],
                [
                    _direction_row(
                        "decoder-bias difference (shared by every token)", inside["shared_offset"]
                    ),
                    _direction_row("mean activation difference, tuned − base", inside["mean_difference"]),
                ],
            ),
        ],
        html=[_latent_dashboard(r) for r in shown],
    )


def _difference_section(difference: dict[str, Any], inside: dict[str, Any]) -> Section:
    """The difference dictionary, beside the crosscoder of the section before."""
    training, control = difference["training"], difference["control_spearman"]["random"]
    rows = [
        [
            r["latent"],
            f"{r['share']:.1%}" if r["share"] is not None else "-",
            r["firing_tokens"],
            interval(r["paired_change"], signed=True),
            ", ".join(f"{w['word']} ({w['implicit_reward']:+.2f})" for w in r["promoted_words"][:6]),
            f"{r['reward_spearman']:+.3f}",
        ]
        for r in difference["writes_most"]
    ]
    return Section(
        "What changed inside: a dictionary of the differences (the cheaper alternative)",
        paragraphs=[
            "One TopK dictionary with the crosscoder's settings, trained on the tuned-minus-base "
            f"difference of the activations at {inside['site']} on the same tokens. Every latent is a "
            "direction of change, so there is nothing shared to tell apart, and there is no decoder bias: "
            "the latents write the whole difference. They are ranked by how much of it they write (mean "
            "activation times decoder norm, raw units), and each "
            "direction goes through the same logit lens. Fraction of the differences' variance "
            f"unexplained: {training['fvu']['difference']:.3f}; {training['dead_latents']} latents dead; "
            f"{difference['n_ranked']} fired on at least {MIN_FIRING_TOKENS} tokens.",
            f"Control for the correlation: {_spread_text('random', control)} (the top ones left out). The "
            "baselines of the section before (the mean activation difference) apply here too. Clearing "
            "this control says a latent writes what the model's outputs changed, not that a reward paid "
            "for it: a model tuned on pure noise clears it too (7 of its 10 top latents at the planted runs' "
            "block; docs/replicates.md), so judge the promoted words against the reward, or against such a "
            "null, before reading a latent as the reward. Paired "
            "change: the latent's mean on the tuned completion's tokens less on the base one's, per prompt "
            "(not adjusted for picking the top).",
        ],
        tables=[
            (
                "Latents writing most of the difference",
                [
                    "latent",
                    "share of the difference",
                    "tokens fired",
                    "paired change [95% CI]",
                    "promoted words (implicit reward)",
                    "Spearman(promoted logit, implicit reward)",
                ],
                rows,
            )
        ],  # fmt: skip
        html=[
            f"<div class='feature'><b>latent {r['latent']}</b> ({r['share'] or 0:.1%} of what the latents "
            f"write){shaded_contexts(r['contexts'])}</div>"
            for r in difference["writes_most"][:3]
        ],
    )


def audit_sections(result: dict[str, Any]) -> list[Section]:
    """The page's sections, in reading order."""
    top = result["floor"]
    sections = [
        _floor_section(result),
        Section(
            "Most rewarded and most penalised words (called above the noise floor)",
            paragraphs=[
                "Ranked by the relative shift beyond the drift of words of the same frequency, so a frequent "
                "word's small relative drift does not outrank a word whose rate doubled. The expected-count "
                "shift (how many more times per text the tuned model would write the word) is shown beside "
                "it; the base expected count is the control: a word the base model already writes often "
                "moves more in count for the same relative shift."
                + ("" if top["n_called"] else " No word clears the floor."),
            ],
            tables=[
                ("Most rewarded words", _WORD_HEADER, _word_rows(result["rewarded"])),
                ("Most penalised words", _WORD_HEADER, _word_rows(result["penalised"])),
                (
                    "Naive ranking without the floor: highest mean log-ratio (the control the floor fixes)",
                    _WORD_HEADER,
                    _word_rows(result["naive_log_ratio_top"]),
                ),
            ],
        ),
        _completion_section(result),
    ]
    if result["examples"]:
        sections.append(
            Section(
                "Tuned completions holding the most rewarded words",
                tables=[
                    (
                        "Examples",
                        ["word", "prompt", "tuned completion"],
                        [[e["word"], e["prompt"], e["completion"]] for e in result["examples"]],
                    )
                ],
            )
        )
    if result.get("inside"):
        sections.append(_inside_section(result["inside"]))
        if result["inside"].get("difference_dictionary"):
            sections.append(_difference_section(result["inside"]["difference_dictionary"], result["inside"]))
    if result.get("reward"):
        sections.append(_reward_section(result["reward"]))
    export = result.get("export")
    sections.append(
        Section(
            "Export",
            paragraphs=[
                f"elicited.tsv holds the {export['n_words']} called words with their relative shifts beyond "
                "the drift scaled to ±4; tune against it with irmscope tune --reward "
                "lexicon:DIR/elicited.tsv."
                if export
                else "No word was called, so no lexicon was exported.",
                "words.csv holds every audited word's numbers."
                + (
                    " crosscoder/ holds the crosscoder (irmscope.sae.crosscoder.load_crosscoder reads it)."
                    if result.get("inside")
                    else ""
                ),
            ],
        )
    )
    return sections


def write_audit_page(out: str | Path, result: dict[str, Any]) -> Path:
    """Write ``audit.html`` (and its tables as CSV under ``tables/``) in ``out``."""
    return write_report(
        Path(out) / "audit.html", "Blind audit: what did tuning reward?", audit_sections(result)
    )
