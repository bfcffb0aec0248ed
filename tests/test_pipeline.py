"""The pipeline on the smoke preset: outputs, caching of finished stages, recomputing only what changed."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from irmscope.config import load_config
from irmscope.pipeline import run_pipeline
from irmscope.rewards import Lexicon

STAGES = (
    "prompts",
    "tune",
    "evaluate",
    "divergence",
    "sites",
    "activations-tuned",
    "activations-base",
    "saes-tuned",
    "saes-base",
    "elicit",
    "interpret",
    "validate",
    "probes",
    "steer",
    "attribute",
    "leaderboard",
)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    config = load_config("smoke", overrides=[f"out_dir={out}"])
    return config, run_pipeline(config, progress=False), out


def test_smoke_run_writes_results_and_report(smoke_run):
    config, results, out = smoke_run
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results, default=str))
    gain = results["evaluation"]["reward_gain"]
    assert gain["low"] <= gain["value"] <= gain["high"]
    assert results["evaluation"]["n_prompts"] == config.data.n_prompts
    assert results["tune"]["steps_done"] == config.tune.steps
    assert len(results["divergence"]["top_layers"]) == config.activations.n_layers
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Table 7" in page and "Training curves" in page
    assert "Table 4" in page and "Table 11" in page and "Table 10" in page and "SAE quality" in page
    assert set(results["manifest"]["stages"]) == set(STAGES)
    csv_files = sorted((out / "tables").glob("*.csv"))
    assert len(csv_files) == page.count("<table>") and page.count(">CSV</a>") == len(csv_files)
    with (out / "tables" / "base-vs-tuned.csv").open() as table7:
        header, first, *_ = csv.reader(table7)
    assert header == ["quantity", "value [95% CI]"] and first[0] == "mean reward, base model"
    assert set(results["saes"]) == {"tuned", "base"}
    for per_site in results["saes"].values():
        assert set(per_site) == set(results["sites"])
        assert all(0 <= m["fvu"] and m["evaluated_on"] == "held-out texts" for m in per_site.values())
        assert all(0 <= m["fvu_without_first_token"] for m in per_site.values())
    elicitation = results["elicitation"]
    for model in ("tuned", "base"):
        for variant, controls in elicitation[model]["agreement"].items():
            assert set(controls) == {"real", "shuffled-labels", "random-features"}, variant
    shift = elicitation["policy_shift"]
    assert set(shift["held_out_words"]) == set(shift["every_word"]) == {"mean-log-ratio", "expected-count"}
    assert set(shift["base_level"]["every_word"]) == set(shift["every_word"])
    for agreement in shift["held_out_words"].values():
        assert agreement["all"]["n"] == elicitation["tuned"]["n_held_out_words"]
    for agreement in shift["every_word"].values():
        assert agreement["all"]["n"] >= elicitation["tuned"]["n_held_out_words"]
    # every tau has its permutation test, every method its paired tuned-minus-base gap
    for model in ("tuned", "base"):
        for controls in elicitation[model]["agreement"].values():
            for result in controls.values():
                if result["all"]["kendall_tau"] == result["all"]["kendall_tau"]:
                    assert result["all"]["n_permutations"] > 100 and 0 < result["all"]["permutation_p"] <= 1
    gap = elicitation["gap"]
    assert set(gap["irm"]) == set(elicitation["tuned"]["agreement"])
    assert all(set(c) == {"real", "shuffled-labels", "random-features"} for c in gap["irm"].values())
    assert set(gap["policy_shift"]["held_out_words"]) == {"mean-log-ratio", "expected-count"}
    for g in gap["policy_shift"]["every_word"].values():
        assert g["all"]["n"] >= elicitation["tuned"]["n_held_out_words"] and "n_nan_resamples" in g["all"]
    assert "gap: tuned - base" in page and "perm. p=" in page
    board = results["leaderboard"]
    assert all("n_nan_resamples" in row["tuned"]["pearson"] for row in board["rows"])
    interpretation, validation = results["interpretation"], results["validation"]
    assert interpretation["n_explained"] == config.interpret.top_k * len(results["sites"])
    heuristic = "offline lexicon heuristic (not a language model)"
    assert interpretation["explainer"].startswith(heuristic) and f"description by {heuristic}" in page
    if "related" in results["validation"]["table5"]:  # Table 5's row of the explainer's choice
        assert f"reward-related features ({heuristic}) ablated" in page
    assert "(the paper's)" not in page
    assert all(f["contexts"] and f["description"] for f in interpretation["features"])
    table5 = validation["table5"]
    assert (
        table5["n_prompts"] == config.interpret.n_ablation_prompts and "Table 5" in page and "Table 6" in page
    )
    if interpretation["n_related"]:
        assert table5["related"]["change"]["n"] == table5["n_prompts"]
    for name in ("attributed", "attributed_opposite", "attributed_random"):
        assert table5[name]["change"]["n"] == table5["n_prompts"]
        assert ("gain_removed" in table5[name]) != ("gain_note" in table5)
    assert "reward attribution" in page and "drop / tuning gain" in page
    assert set(validation["table6"]) == {"faithful", "ridge-delta"}
    probes, steering, board = results["probes"], results["steering"], results["leaderboard"]
    for model in ("tuned", "base"):
        for target in ("reward", "ratings"):
            assert probes[target][model]["best"]["position"] in ("last_token", "prompt_end", "mean_pooled")
        curve = probes["reward"][model]["by_position"]["curve"]
        assert 0 < len(curve) <= config.probes.max_positions
        assert probes["ratings"][model]["by_position"] is None  # a second pass over reviews: skipped
    assert probes["ratings"]["target"] == "labels"  # rotten tomatoes has fresh/rotten labels, no stars
    assert {c["kind"] for c in steering["curves"].values()} == {"reward direction", "random control"}
    for curve in steering["curves"].values():
        assert [p["scale"] for p in curve["points"]] == config.probes.steer_scales
        unsteered = next(p for p in curve["points"] if p["scale"] == 0)
        assert unsteered["reward_change"]["value"] == 0
    methods = {row["method"]: row for row in board["rows"]}
    assert {
        "random (control)",
        "reward probe",
        "ratings probe",
        "DPO implicit reward",
        "inverse RL, max-entropy",
        "inverse RL, max-margin",
        "CCS direction (unsupervised)",
    } <= set(methods)
    assert methods["CCS direction (unsupervised)"]["details"]["n_pairs"] >= 10
    attribution = results["attribution"]
    assert attribution["n_pairs"] == config.probes.n_patch_pairs
    for model in ("tuned", "base"):
        terms = attribution[model]
        assert np.isclose(
            terms["embedding"] + sum(terms["attn"]) + sum(terms["mlp"]), terms["total"], atol=1e-3
        )
        assert len(terms["patching"]["mlp"]) == terms["layer"] + 1
    assert "Reward attribution" in page
    assert methods["DPO implicit reward"]["base"] is None and methods["reward probe"]["supervised"]
    assert board["n_completions"] == 2 * config.data.n_prompts
    assert "Leaderboard" in page and "Steering" in page and "Reward probes" in page


def test_table5_controls_script_reads_a_finished_run(smoke_run):
    """scripts/table5_controls.py finds the run's tuned model, reward and dictionaries from its folders."""
    _, results, out = smoke_run
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "table5_controls.py")
    done = subprocess.run(
        [sys.executable, script, str(out), "--draws", "2"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("tuned, random draw 2: drop / tuning gain")
    samples = json.loads(next(out.glob("stages/evaluate-*/samples.json")).read_text())
    base = np.mean(samples["base_scores"][: results["validation"]["table5"]["n_prompts"]])
    assert lines[1].startswith(f"base, attributed features ablated: reward {base:.3f} -> ")


def test_rerun_uses_every_finished_stage(smoke_run, capsys):
    config, results, out = smoke_run
    again = run_pipeline(config, progress=False)
    printed = capsys.readouterr().out
    assert printed.count(": cached") == len(STAGES) and ": running" not in printed
    assert again["evaluation"] == results["evaluation"]


def test_changing_one_setting_recomputes_only_what_depends_on_it(smoke_run, capsys):
    config, _, out = smoke_run
    changed = load_config("smoke", overrides=[f"out_dir={out}", "elicit.n_contexts=3"])
    run_pipeline(changed, progress=False)
    printed = capsys.readouterr().out
    recomputed = {"elicit", "validate", "leaderboard"}  # both read the elicitation (R, its lexicon)
    for name in STAGES:
        assert f"stage {name}: {'done' if name in recomputed else 'cached'}" in printed, name


def test_base_only_run_with_a_planted_reward(tmp_path):
    overrides = [
        f"out_dir={tmp_path}",
        "tune.algorithm=none",
        "reward.spec=planted",
        "reward.planted_words=20",
    ]
    config = load_config("smoke", overrides=overrides)
    results = run_pipeline(config, progress=False)
    assert results["divergence"] is None and "tune" not in results and results["elicitation"] is None
    assert results["interpretation"] is None and results["validation"] is None
    assert set(results["saes"]) == {"base"}
    assert results["evaluation"]["base_mean_reward"]["n"] == config.data.n_prompts
    assert results["subject"]["reward"] == "planted" and "planted-lexicon" in results["manifest"]["stages"]
    planted = next((tmp_path / "stages").glob("planted-lexicon-*")) / "planted.tsv"
    assert len(Lexicon.from_tsv(planted)) == 20


def _comparable(results: dict) -> dict:
    """results.json without what legitimately differs between two runs: folders and timings."""
    out = json.loads(json.dumps(results, default=str))
    out["config"].pop("out_dir")
    out["subject"].pop("tuned")
    out.pop("manifest")
    out["tune"].pop("train_seconds")
    out["tune"].pop("resumed_from")
    out["activations"]["tuned"].pop("model")  # the tuned model's folder
    return out


def test_sigkill_during_sae_stage_resumes_and_matches_an_uninterrupted_run(smoke_run, tmp_path, capsys):
    """Kill -9 the run after the first SAE of the tuned model is written, run it again: the finished stages
    are reused, the finished SAE is not retrained, and results.json equals the uninterrupted run's."""
    config, reference, _ = smoke_run
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "irmscope", "run", "--preset", "smoke", "--set", f"out_dir={out}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_sae = None
    deadline = time.monotonic() + 600
    while first_sae is None and proc.poll() is None and time.monotonic() < deadline:
        found = list(out.glob("stages/.saes-tuned-*.work/*/cfg.json"))
        first_sae = found[0] if found else None
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first_sae is not None, "the run ended before its SAE stage could be interrupted"
    assert not list(out.glob("stages/saes-tuned-*/done.json")), "the SAE stage finished before the kill"
    trained_at = first_sae.with_name("sae_weights.safetensors").stat().st_mtime_ns

    resumed = run_pipeline(load_config("smoke", overrides=[f"out_dir={out}"]), progress=False)
    printed = capsys.readouterr().out
    for name in STAGES[: STAGES.index("saes-tuned")]:
        assert f"stage {name}: cached" in printed
    assert "stage saes-tuned: running" in printed
    final_sae = next(out.glob(f"stages/saes-tuned-*/{first_sae.parent.name}/sae_weights.safetensors"))
    assert final_sae.stat().st_mtime_ns == trained_at
    assert _comparable(resumed) == _comparable(reference)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium to run the browser check")
def test_report_renders_in_a_headless_browser(smoke_run, tmp_path):
    """The page as a browser draws it: every table in the DOM, and the embedded plots decoded and painted."""
    _, _, out = smoke_run
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    page = (out / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table>") == (out / "report.html").read_text().count("<table>") > 5
    shot = tmp_path / "page.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1000,9000", "--hide-scrollbars", page],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    # Text and table rules are grey; only the decoded plots paint coloured pixels (matplotlib's palette).
    assert (saturation > 80).sum() > 5_000
