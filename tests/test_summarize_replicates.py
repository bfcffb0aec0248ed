"""experiments/summarize_replicates.py: the per-seed table and the retune shares read the right fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "summarize_replicates.py"


@pytest.fixture(scope="module")
def summarize(load_script):
    return load_script(SCRIPT)


def smoke_results() -> dict:
    """A real results.json: the smoke preset's, as stored for the pipeline's reference test (any kind of
    CPU's; the keys are what these tests read)."""
    return json.loads(min((Path(__file__).parent / "data" / "smoke_results").glob("*.json")).read_text())


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _evaluation(base: np.ndarray, tuned: np.ndarray) -> dict:
    gain = float((tuned - base).mean())
    return {
        "reward_gain": {"value": gain, "low": gain - 0.1, "high": gain + 0.1},
        "samples": {"base_scores": base.tolist(), "tuned_scores": tuned.tolist()},
    }


#: an audit's words.csv: "time" called; "film" rose surely but little; "junk" rose far in one text (a wide
#: interval); "plot" fell
WORDS = [
    "time,1.0,0.5,1.5,1.0,0.1,5.0,True",
    "film,0.3,0.2,0.4,0.3,0.2,1.0,False",
    "junk,5.0,-1.0,9.0,5.0,0.0001,0.5,False",
    "plot,-0.2,-0.3,-0.1,-0.2,0.1,-1.0,False",
]


def _words_csv(folder: Path, rows: list[str]) -> None:
    columns = "word,relative_shift,relative_low,relative_high,beyond_drift,base_count,z,called"
    (folder / "audit").mkdir(parents=True, exist_ok=True)
    (folder / "audit" / "words.csv").write_text("\n".join([columns, *rows]) + "\n")


def _seed_folder(root: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    folder = root / "seed4"
    (folder).mkdir(parents=True)
    (folder / "lexicon.tsv").write_text(
        "# irmscope lexicon: word<TAB>value\nfilm\t2.8\nplot\t-4.0\ntime\t1.0\n"
    )
    _write(
        folder / "tuned" / "model" / "irmscope_manifest.json",
        {"steps_done": 12, "stopping": {"reason": "target"}},
    )
    base = rng.normal(size=200)
    _write(folder / "evaluation.json", _evaluation(base, base + 2.0 + rng.normal(scale=0.5, size=200)))
    _words_csv(folder, WORDS)
    agreement = {"kendall_tau": 0.3, "permutation_p": 0.005, "n": 3}
    _write(
        folder / "audit" / "audit.json",
        {
            "floor": {"n_called": 4, "n_rewarded": 4, "n_penalised": 0, "q": 0.05},
            "completions": {"gained": [{"word": "film", "share": 0.5}]},
            "reward": {
                "kendall": {"elicited": agreement, "base_level": {**agreement, "kendall_tau": 0.01}},
                "tau_gap": {"value": 0.29, "low": 0.1, "high": 0.4},
                "precision_rewarded": {
                    "elicited": {"k": 2, "value": 0.5},
                    "base_level": {"k": 2, "value": 0.0},
                    "chance": 0.01,
                },
            },
        },
    )
    return folder, base


def test_planted_row_and_retune_shares(summarize, tmp_path):
    rng = np.random.default_rng(0)
    folder, base = _seed_folder(tmp_path, rng)
    assert summarize.planted_row(folder)["retunes"]["elicited"] is None  # not run: no share invented
    _write(folder / "retune-elicited.json", _evaluation(base, base + 1.0 + rng.normal(scale=0.5, size=200)))
    _write(folder / "retune-shuffled.json", _evaluation(base, base + rng.normal(scale=0.5, size=200)))
    row = summarize.planted_row(folder)
    assert row["lexicon_words"] == 3 and row["steps"] == 12 and row["stop_reason"] == "target"
    assert row["tau"] == 0.3 and row["base_tau"] == 0.01 and row["top_gained_word"] == "film"
    elicited, shuffled = row["retunes"]["elicited"], row["retunes"]["shuffled"]
    assert elicited["share"] == pytest.approx(0.5, abs=0.05)
    assert elicited["interval"][0] < elicited["share"] < elicited["interval"][1]
    assert elicited["difference"]["high"] < 0 < elicited["gain"]["low"]  # below the original, above 0
    assert abs(shuffled["share"]) < 0.1 and shuffled["interval"][0] < 0 < shuffled["interval"][1]
    table = summarize.markdown([row], [summarize.noise_row(folder)])
    assert f"| seed4 | 3 | 12 | {row['gain']:+.2f} [" in table
    retune_line = next(
        line for line in table.splitlines() if line.startswith(f"| seed4 | audit | {row['gain']:+.2f} |")
    )
    _, _, _, elicited_cell, shuffled_cell = retune_line.strip("| ").split(" | ")
    assert re.search(r"; (49|50|51)% \[", elicited_cell) and re.search(r"; -?\d% \[", shuffled_cell)


def test_precision_is_compared_again_from_the_words_table_under_both_rules(summarize, tmp_path):
    """precision@20 comes from the audit's words.csv, whatever its audit.json says (0.5 there): the
    estimate rule (the uncalled words by their shift) and, beside it, the bound rule (by the lower end of
    their interval), with the shuffled-values control; the same for a noise-tuned model's audit against
    lexicons it never saw; an audit without words.csv is named in one line."""
    folder, _ = _seed_folder(tmp_path, np.random.default_rng(0))
    row = summarize.planted_row(folder)
    assert row["precision_at_20"] == 0.5 and row["precision_at_20_by_bound"] == 1.0
    assert 0 < row["shuffled_values_precision"] < 1 and 0 < row["shuffled_values_p"] <= 1
    assert "| 0.50 (1.00) | " in summarize.markdown([row], [])
    noise = summarize.noise_row(folder, [folder / "lexicon.tsv"])
    against = noise["precision_against"]
    assert [(a["precision_at_20"], a["precision_at_20_by_bound"]) for a in against] == [(0.5, 1.0)]
    assert "| 0.50 (1.00) |" in summarize.markdown([row], [noise])
    assert summarize.noise_row(folder)["precision_against"] == []  # not asked: words.csv not read
    (folder / "audit" / "words.csv").unlink()
    with pytest.raises(SystemExit, match=r"^error: no .*words.csv; rerun the audit"):
        summarize.planted_row(folder)


def test_no_share_when_the_original_gain_may_be_zero(summarize, tmp_path):
    rng = np.random.default_rng(2)
    folder, base = _seed_folder(tmp_path, rng)
    _write(folder / "evaluation.json", _evaluation(base, base + rng.normal(scale=0.5, size=200)))
    evaluation = json.loads((folder / "evaluation.json").read_text())
    evaluation["reward_gain"]["low"] = -0.05
    _write(folder / "evaluation.json", evaluation)
    _write(folder / "retune-elicited.json", _evaluation(base, base + 0.3 + rng.normal(scale=0.5, size=200)))
    retune = summarize.planted_row(folder)["retunes"]["elicited"]
    assert retune["share"] is None and retune["interval"] is None and retune["difference"]["low"] > 0
    assert "no share" in summarize._retune_cell(retune)


def test_a_retune_on_other_base_samples_is_refused(summarize, tmp_path):
    rng = np.random.default_rng(1)
    folder, base = _seed_folder(tmp_path, rng)
    _write(folder / "retune-elicited.json", _evaluation(base + 1.0, base + 2.0))
    with pytest.raises(SystemExit, match="base completions"):
        summarize.planted_row(folder)


def test_an_unfinished_replicate_is_named_in_one_line(summarize, tmp_path):
    with pytest.raises(SystemExit, match=r"^error: no .*seed9.*; finish that replicate \(rerun its script"):
        summarize.planted_row(tmp_path / "seed9")


def test_spread_over_seeds(summarize):
    rows = [{"tau": 0.2}, {"tau": 0.4}, {"tau": 0.3}]
    assert summarize.spread(rows, "tau") == pytest.approx({"mean": 0.3, "sd": 0.1, "min": 0.2, "max": 0.4})


def test_pipeline_row_reads_a_real_results_json(summarize, tmp_path):
    """The pipeline table reads the smoke run's stored results.json (the real keys), and a seed without a
    pipeline run gets no row."""
    assert summarize.pipeline_row(tmp_path / "seed5") is None
    results = smoke_results()
    _write(tmp_path / "seed5" / "pipeline" / "results.json", results)
    (tmp_path / "seed5" / "lexicon.tsv").write_text("good\t2\nbad\t-2\n")
    row = summarize.pipeline_row(tmp_path / "seed5")
    shift = results["elicitation"]["policy_shift"]["held_out_words"]["expected-count"]["all"]
    assert row["shift_tau"] == shift["kendall_tau"] and row["shift_words"] == shift["n"]
    assert (
        row["irm_tau"]
        == results["elicitation"]["tuned"]["agreement"]["faithful"]["real"]["all"]["kendall_tau"]
    )
    assert row["gain"] == results["evaluation"]["reward_gain"]
    inside = results["audit"]["inside"]
    assert row["inside"]["site"] == inside["site"] and row["inside"]["n_latents"] == len(
        inside["changed_most"]
    )
    assert row["inside"]["n_promoted"] == 10 * len(inside["changed_most"])
    difference = inside["difference_dictionary"]
    assert row["inside"]["difference"]["top_share"] == difference["writes_most"][0]["share"]
    assert row["inside"]["difference"]["n_promoted"] == 10 * len(difference["writes_most"])
    table = summarize.pipeline_markdown([row])
    assert f"{row['shift_tau']:+.3f}" in table and f"| seed5 | {inside['site']} |" in table
    assert (
        f"| seed5 | {difference['training']['fvu']['difference']:.2f} |" in table
    )  # the difference dictionary


def test_the_pipeline_table_of_several_seeds_ends_with_their_spread(summarize, tmp_path):
    reference = smoke_results()
    rows = []
    for seed, tau in ((1, 0.2), (2, 0.4)):
        results = json.loads(json.dumps(reference))
        results["elicitation"]["policy_shift"]["held_out_words"]["expected-count"]["all"]["kendall_tau"] = tau
        _write(tmp_path / f"seed{seed}" / "pipeline" / "results.json", results)
        (tmp_path / f"seed{seed}" / "lexicon.tsv").write_text("good\t2\n")
        rows.append(summarize.pipeline_row(tmp_path / f"seed{seed}"))
    table = summarize.pipeline_markdown(rows)
    assert "| shift_tau | +0.300 | 0.141 | +0.200 | +0.400 |" in table
    assert table.count("| over seeds |") == 1


def test_the_noise_row_reads_its_dictionaries_against_the_control_lexicon(summarize, tmp_path):
    """Once the noise model has been audited with its dictionaries against a lexicon it never saw
    (``audit-inside/``), its row carries their numbers, scored against that lexicon, and the noise table
    shows them; before that the row has none."""
    audit = smoke_results()["audit"]
    folder = tmp_path / "seed1"
    floor = {"n_called": 2, "n_rewarded": 1, "n_penalised": 1, "q": 0.05}
    _write(folder / "audit" / "audit.json", {"floor": floor})
    assert summarize.noise_row(folder)["inside"] == {}
    promoted = audit["inside"]["difference_dictionary"]["writes_most"][0]["promoted_words"]
    lexicon = tmp_path / "control.tsv"
    lexicon.write_text(f"{promoted[0]['word']}\t3\n")  # the control lexicon pays one promoted word
    _write(
        folder / "audit-inside" / "audit.json",
        {**audit, "floor": floor, "reward": {"n_paid": 1}, "n_words": 100,
         "settings": {"reward": f"lexicon:{lexicon}"}},
    )  # fmt: skip
    row = summarize.noise_row(folder)
    inside = row["inside"]["audit-inside"]
    assert inside["difference"]["promoted_paid"] >= 1 and inside["chance_paid"] == 0.01
    table = summarize.markdown([], [row])
    assert "| noise seed1 (audit-inside) | " in table and "difference dictionary FVU" in table
