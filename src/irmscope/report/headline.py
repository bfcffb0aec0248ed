"""The first lines of a run: did tuning install its reward, in sampled rewards and in the logits?

A tuned model is only evidence of a learned reward when tuning changed it. Two tests answer that, and they
can disagree: the tuning gain (mean reward of sampled completions, tuned minus base, paired over prompts)
and the token-level policy shift scored against the reward beside its permutation null (a reward can be
installed in the logits before it shows in sampled rewards). Both go first, on the command line and at the
top of the report, and a gain whose interval includes 0 is said in so many words.
"""

from __future__ import annotations

from typing import Any

#: the policy-shift estimate the installation test reads (chosen on planted seed 0; see docs/findings.md)
SHIFT_ESTIMATE = "expected-count"


def gain_warning(evaluation: dict[str, Any], reward: str) -> str | None:
    """One line when the tuning gain's interval includes 0 (or lies below it), else ``None``."""
    gain = evaluation.get("reward_gain")
    if not gain or gain["low"] > 0:
        return None
    return (
        f"WARNING: the tuning gain in {reward} reward, {_interval(gain)}, has a 95% interval that "
        "includes 0: the sampled completions do not show that the tuned model learned its reward (see the "
        "policy-shift test for whether it was installed in the logits; more steps, or tuning against a "
        "target with tune.target_gain, may install it)"
    )


def headline(results: dict[str, Any]) -> list[str]:
    """The lines a reader needs first, each with its interval or its null."""
    reward, evaluation = results["subject"]["reward"], results["evaluation"]
    lines = []
    gain = evaluation.get("reward_gain")
    if gain:
        lines.append(
            f"tuning gain in mean {reward} reward: {_interval(gain)} over {evaluation['n_prompts']} held-out "
            "prompts (tuned minus base, paired)"
        )
        warning = gain_warning(evaluation, reward)
        lines += [warning] if warning else []
    shift = (results.get("elicitation") or {}).get("policy_shift")
    if shift:
        tuned = shift["every_word"][SHIFT_ESTIMATE]["all"]
        base = shift["base_level"]["every_word"][SHIFT_ESTIMATE]["all"]
        lines.append(
            f"installed in the logits? policy shift ({SHIFT_ESTIMATE}) against the reward over {tuned['n']} "
            f"words: Kendall tau {tuned['kendall_tau']:+.3f}, permutation p {tuned['permutation_p']:.3g} "
            f"({tuned['n_permutations']} permutations); the base model's own level {base['kendall_tau']:+.3f}"
        )
        installed = tuned["permutation_p"] < 0.05
        if gain and gain["low"] <= 0 < gain["high"] and installed:
            lines.append(
                "the two tests disagree: the reward shows in the tuned model's logits but not (yet) in the "
                "mean reward of its samples"
            )
        elif gain and gain["low"] > 0 and not installed:
            lines.append(
                "the two tests disagree: the samples gained reward, but the policy shift does not rank the "
                "reward's words better than permuted values (the gain may come from few words)"
            )
    return lines


def _interval(estimate: dict[str, Any]) -> str:
    return f"{estimate['value']:+.3f} [{estimate['low']:+.3f}, {estimate['high']:+.3f}]"
