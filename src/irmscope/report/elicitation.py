"""Report sections for the reward elicitation: the paper's Tables 3, 4, 10 and 11 with our numbers."""

from __future__ import annotations

from typing import Any

from irmscope.elicit.agreement import N_PERMUTATIONS
from irmscope.elicit.irm import VARIANTS
from irmscope.report.html import Section
from irmscope.report.plots import tau_forest

CONTROLS = ("real", "shuffled-labels", "random-features")


def _tau(a: dict[str, Any] | None) -> str:
    if not a or a["kendall_tau"] != a["kendall_tau"]:
        return "n/a"
    low, high = a["kendall_ci"]
    text = f"{a['kendall_tau']:+.3f} [{low:+.3f}, {high:+.3f}] p={a['kendall_p']:.1e}"
    if a.get("n_permutations"):
        null_low, null_high = a["permutation_range"]
        text += f"; perm. p={a['permutation_p']:.3f}, null [{null_low:+.2f}, {null_high:+.2f}]"
    if a.get("n_within_sign_permutations"):
        text += f"; within-sign p={a['within_sign_p']:.3f}"
    return text


def _gap(g: dict[str, Any] | None) -> str:
    if not g or g["value"] != g["value"]:
        return "n/a"
    return f"{g['value']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"


def _sign(a: dict[str, Any] | None) -> str:
    return "n/a" if not a or a["sign_agreement"] != a["sign_agreement"] else f"{a['sign_agreement']:.2f}"


AGREEMENT_COLUMNS = [
    "method",
    "control",
    "tau, tuned model",
    "tau, base model",
    "gap: tuned - base",
    "sign agr., tuned",
    "sign agr., base",
    "words",
]


def elicitation_sections(elicitation: dict[str, Any], reward: str) -> list[Section]:
    """Tables 4 and 11 (tau for all and negative words, tuned vs base, every variant and control), the
    tau forest plot, and Tables 3 and 10 (words with reconstructed and true values)."""
    tuned, shift = elicitation["tuned"], elicitation["policy_shift"]
    tables, forest = [], []
    for subset, title in (("all", "Table 4: all held-out words"), ("negative", "Table 11: negative words")):
        rows = _agreement_rows(elicitation, subset, forest if subset == "all" else [])
        tables.append((title, AGREEMENT_COLUMNS, rows))
    word_tables = [
        (
            f"{label}: reconstructed values of held-out words (tuned model)",
            ["word", "true value", *VARIANTS],
            [[e["word"], e["true"], *(e[v] for v in VARIANTS)] for e in tuned["tables"][name]],
        )
        for name, label in (("table3", "Table 3"), ("table10", "Table 10"))
    ]
    return [
        Section(
            "Reward elicitation: divergence from the true reward (§5.1, Tables 4 and 11)",
            paragraphs=[_intro(tuned, shift, reward)],
            tables=[*tables, _every_word_table(shift, elicitation.get("gap", {}).get("policy_shift", {}))],
            figures=[("Kendall's tau by method, tuned vs base model", tau_forest(forest))],
        ),
        Section("Reconstructed lexicon (Tables 3 and 10)", tables=word_tables),
    ]


def _agreement_rows(elicitation: dict[str, Any], subset: str, forest: list) -> list[list[Any]]:
    """One row per regression variant and control, then one per policy-shift estimate, on the held-out
    words of ``subset``; each row's tuned and base agreement is also appended to ``forest``."""
    tuned, base, shift = elicitation["tuned"], elicitation["base"], elicitation["policy_shift"]
    gaps = elicitation.get("gap", {})
    shift_gaps = gaps.get("policy_shift", {})
    rows = []
    for variant in VARIANTS:
        for control in CONTROLS:
            t = tuned["agreement"][variant][control][subset]
            b = base["agreement"][variant][control][subset]
            gap = gaps.get("irm", {}).get(variant, {}).get(control, {}).get(subset)
            rows.append(
                [
                    f"IRM regression, {variant}",
                    control,
                    _tau(t),
                    _tau(b),
                    _gap(gap),
                    _sign(t),
                    _sign(b),
                    t["n"],
                ]
            )
            forest.append((f"{variant} / {control}", {"tuned": t, "base": b}))
    for estimate, agreement in shift["held_out_words"].items():
        s, level = agreement[subset], shift["base_level"]["held_out_words"][estimate][subset]
        rows.append(
            [
                f"policy shift, {estimate} (token-level implicit reward)",
                "base: its own level, no reference",
                _tau(s),
                _tau(level),
                _gap(shift_gaps.get("held_out_words", {}).get(estimate, {}).get(subset)),
                _sign(s),
                "n/a (a level has no sign)",
                s["n"],
            ]
        )
        forest.append((f"policy shift, {estimate} (base: its level)", {"tuned": s, "base": level}))
    return rows


def _intro(tuned: dict[str, Any], shift: dict[str, Any], reward: str) -> str:
    """What the elicitation tables show and how to read them (the controls, the tests, the gap)."""
    return (
        f"The {reward} lexicon recovered from the tuned model and, as the control the paper lacks, from the "
        f"untuned base model, on {tuned['n_held_out_words']} words never used in fitting "
        f"({tuned['n_triples']} contrastive triples, {tuned['n_training_rows']} training rows, words placed "
        f"after {tuned['n_contexts']} contexts, SAE features at {', '.join(tuned['sites'])}). Only a gap "
        "between tuned and base is evidence that tuning installed the reward: a pretrained model already "
        "knows sentiment. Controls: the regression fitted to shuffled targets, and the same pipeline with "
        "untrained (random) SAE features. Kendall's tau (the coefficient; the paper's Table 4 states a "
        "Kendall tau distance, which without ties is (1 - tau) / 2) with its p-value and a 95% bootstrap "
        "interval over words, then a permutation test: the p-value assumes independent words, but every "
        "word is read through one fitted regression, so each variant is refitted "
        f"{tuned.get('n_permutations', 0)} times on lexicon values permuted over the fitting words (for "
        "the policy shift, which fits nothing, its values are permuted over the words); perm. p is "
        "(1 + #null taus >= tau) / (1 + #null) and the null's central 95% range is beside it. In the "
        "negative-words rows the null still permutes values over all fitting words, so its p-value tests "
        "any association with the lexicon, not a ranking within negative words. Within-sign p asks whether "
        "tau reflects more than the sign: the true values are permuted within the positive and within the "
        f"negative words separately ({N_PERMUTATIONS} times, no refit), so its null keeps every word's "
        "polarity; it is small only when words are ranked beyond their sign (in the negative-words rows: "
        "ranked within the negative words). The bootstrap intervals "
        "(of tau and of the gap) resample the evaluated words with the fitted regression held fixed: they "
        "are conditional on that fit and leave out the variation from which words it was fitted on. The gap "
        "column is tau(tuned) - tau(base) with a paired bootstrap interval (the same word resamples for "
        "both models): the evidence that tuning installed the reward. The policy shift compares the tuned "
        "with the base model's probability of each word at "
        f"every position of {shift['n_texts']} prompt + completion texts of both models, as the mean "
        "log-ratio (every position weighs the same) or as the log-ratio of expected counts (positions weigh "
        "by how likely the word is there). It fits nothing, so every lexicon word is held out from it: the "
        "last table scores it on all of them (up to the elicitation's word limit). For the base model the "
        "shift is zero by construction; its column holds the base model's own level (its mean "
        "log-probability or log expected count of each word): does word frequency alone predict the reward?"
    )


def _every_word_table(shift: dict[str, Any], shift_gaps: dict[str, Any]) -> tuple:
    """The policy shift scored on every lexicon word (it fits nothing, so every word is held out)."""
    return (
        "Policy shift on all lexicon words (nothing is fitted; a seeded sample up to the word limit)",
        [
            "estimate",
            "tau, all words",
            "tau, negative words",
            "sign agreement",
            "tau, base level",
            "gap: shift - base level",
            "words",
        ],
        [
            [
                estimate,
                _tau(agreement["all"]),
                _tau(agreement["negative"]),
                _sign(agreement["all"]),
                _tau(shift["base_level"]["every_word"][estimate]["all"]),
                _gap(shift_gaps.get("every_word", {}).get(estimate, {}).get("all")),
                agreement["all"]["n"],
            ]
            for estimate, agreement in shift["every_word"].items()
        ],
    )
