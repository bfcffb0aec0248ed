"""The run's first lines: the tuning gain, a warning when its interval includes 0, and the policy-shift
installation test beside its permutation null, disagreeing in the open."""

from irmscope.report.headline import gain_warning, headline


def _results(gain: tuple[float, float, float], shift_p: float | None) -> dict:
    value, low, high = gain
    results = {
        "subject": {"reward": "planted"},
        "evaluation": {"reward_gain": {"value": value, "low": low, "high": high}, "n_prompts": 200},
    }
    if shift_p is not None:
        row = {"n": 149, "kendall_tau": 0.23, "permutation_p": shift_p, "n_permutations": 200}
        base = {**row, "kendall_tau": 0.03}
        shift = {
            "every_word": {"expected-count": {"all": row}},
            "base_level": {"every_word": {"expected-count": {"all": base}}},
        }
        results["elicitation"] = {"policy_shift": shift}
    return results


def test_a_gain_whose_interval_includes_zero_is_a_warning_line():
    lines = headline(_results((0.04, -0.02, 0.10), None))
    assert lines[0] == (
        "tuning gain in mean planted reward: +0.040 [-0.020, +0.100] over 200 held-out prompts "
        "(tuned minus base, paired)"
    )
    assert lines[1].startswith("WARNING: the tuning gain in planted reward, +0.040 [-0.020, +0.100]")
    assert gain_warning({"reward_gain": {"value": 2.0, "low": 1.8, "high": 2.2}}, "vader") is None
    assert gain_warning({"base_mean_reward": {}}, "vader") is None  # no tuned model: nothing to warn about


def test_the_two_installation_tests_disagree_in_the_open():
    lines = headline(_results((0.04, -0.02, 0.10), 0.005))
    assert "permutation p 0.005 (200 permutations); the base model's own level +0.030" in lines[2]
    assert lines[3].startswith("the two tests disagree: the reward shows in the tuned model's logits")
    agreeing = headline(_results((2.0, 1.8, 2.2), 0.005))
    assert len(agreeing) == 2 and not any("WARNING" in line or "disagree" in line for line in agreeing)
    assert "disagree" in headline(_results((2.0, 1.8, 2.2), 0.4))[-1]
