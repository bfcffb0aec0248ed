"""The pipeline on the smoke preset: outputs, caching of finished stages, recomputing only what changed."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irmscope.artifacts import Samples
from irmscope.config import load_config
from irmscope.locking import LOCK_NAME, wait_for_lock
from irmscope.models.accounting import TokenCounts
from irmscope.pipeline import STAGES as STAGE_CLASSES
from irmscope.pipeline import progress, run_pipeline, stage_names
from irmscope.provenance import cpu_kind
from irmscope.report.run_report import RunGoingOn, write_run_report
from irmscope.rewards import Lexicon, load_reward
from irmscope.runs import Run, stage_dir

#: the stage folders of a run with a tuned model and a fixed reward (no planted lexicon), from the registry
STAGES = tuple(name for name in stage_names() if name != "planted-lexicon")
#: the line the runner prints for the k-th of the STAGES (a run with a tuned model), up to its outcome
LINE = {name: f"[irmscope] stage {k}/{len(STAGES)} {name}: " for k, name in enumerate(STAGES, start=1)}
#: results.json of the smoke preset as the pipeline wrote it, one file per kind of CPU (see the test)
REFERENCES = Path(__file__).parent / "data" / "smoke_results"


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
    done = out / "stages" / f"tune-{results['manifest']['stages']['tune']['key']}" / "done.json"
    assert json.loads(done.read_text())["resumed_from"] is None  # so its time sets the machine's pace
    assert len(results["divergence"]["top_layers"]) == config.activations.n_layers
    page = (out / "report.html").read_text()
    assert results["headline"][0].startswith("tuning gain in mean ")
    assert page.index("Did tuning install its reward?") < page.index("Table 7")
    assert "data:image/png;base64," in page and "Table 7" in page and "Training curves" in page
    assert "Table 4" in page and "Table 11" in page and "Table 10" in page and "SAE quality" in page
    assert set(results["manifest"]["stages"]) == set(STAGES)
    assert results["manifest"]["machine"]["kind"] == cpu_kind() and f"({cpu_kind()}, " in page
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True)
    code = results["manifest"]["code"]  # this checkout's commit (CI tests a clone), None outside one
    assert code is None if head.returncode else code["commit"] == head.stdout.decode().strip()
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
                    assert result["all"]["n_within_sign_permutations"] > 100
    gap = elicitation["gap"]
    assert set(gap["irm"]) == set(elicitation["tuned"]["agreement"])
    assert all(set(c) == {"real", "shuffled-labels", "random-features"} for c in gap["irm"].values())
    assert set(gap["policy_shift"]["held_out_words"]) == {"mean-log-ratio", "expected-count"}
    for g in gap["policy_shift"]["every_word"].values():
        assert g["all"]["n"] >= elicitation["tuned"]["n_held_out_words"] and "n_nan_resamples" in g["all"]
    assert "gap: tuned - base" in page and "perm. p=" in page and "within-sign p=" in page
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
    assert table5["n_prompts"] == config.validation.n_ablation_prompts
    assert "Table 5" in page and "Table 6" in page
    if interpretation["n_related"]:
        assert table5["related"]["change"]["n"] == table5["n_prompts"]
    for name in ("attributed", "attributed_opposite", "attributed_random"):
        assert table5[name]["change"]["n"] == table5["n_prompts"]
        assert ("gain_removed" in table5[name]) != ("gain_note" in table5)
    assert "reward attribution" in page and "drop / tuning gain" in page
    assert set(validation["table6"]) == {"faithful", "ridge-delta"}
    # Table 6 reads its own reviews, cached for the tuned model only
    assert (
        results["activations"]["tuned"]["table6_rows"] > 0
        and "table6_rows" not in results["activations"]["base"]
    )
    assert all(
        t["n_tokens"] == results["activations"]["tuned"]["table6_rows"] for t in validation["table6"].values()
    )
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


def test_every_stage_records_the_tokens_its_model_passes_processed(smoke_run):
    """The runner counts each stage's model tokens by kind into done.json and the manifest (what
    benchmarks/bench_pipeline.py prices): exact where the arithmetic is known, zero where no model runs."""
    config, results, out = smoke_run
    stages = results["manifest"]["stages"]
    for name, entry in stages.items():
        done = json.loads((out / "stages" / f"{name}-{entry['key']}" / "done.json").read_text())
        assert done["tokens"] == entry["tokens"], name
        assert set(entry["tokens"]) == set(TokenCounts().to_dict()), name
    tune, generation = config.tune, config.generation
    # each step samples batch_size completions; all but the first token of each come from a cached step
    tune_sampled = tune.steps * tune.batch_size * (tune.max_completion_tokens - 1)
    assert stages["tune"]["tokens"]["sampled"] == tune_sampled
    assert stages["tune"]["tokens"]["backward"] > 0
    n_prompts = results["evaluation"]["n_prompts"]
    assert stages["evaluate"]["tokens"]["sampled"] == 2 * n_prompts * (generation.max_new_tokens - 1)
    for label in ("tuned", "base"):
        assert stages[f"activations-{label}"]["tokens"]["forward"] > 0
        assert stages[f"saes-{label}"]["tokens"] == TokenCounts().to_dict()
    assert "tokens" not in results["evaluation"]  # bookkeeping stays out of the stages' sections
    parts = stages["leaderboard"]["parts"]  # each method timed, for the benchmark's reason
    assert set(parts) == {row["method"] for row in results["leaderboard"]["rows"]}
    assert all(seconds >= 0 for seconds in parts.values()) and "seconds" not in results["leaderboard"]
    assert set(stages["audit"]["parts"]) == {"sampling", "scoring", "statistics", "inside"}


def test_one_reading_of_the_samples_serves_the_policy_shift_the_audit_and_the_probes(smoke_run):
    """The read-samples stage runs each model once over the evaluation samples; what it keeps for the
    elicit, audit and probes stages equals each of them reading the samples alone, and the audit runs no
    model pass of its own."""
    from irmscope.audit.shift import UnitShifts, unit_shifts, vocabulary_words
    from irmscope.data.samples import first_of_each_policy
    from irmscope.elicit.policy_shift import ShiftLevels, shift_levels
    from irmscope.models import load_model
    from irmscope.probes.residuals import load_residuals, read_residuals

    config, results, out = smoke_run
    stages = results["manifest"]["stages"]
    folder = stage_dir(out, results, "read-samples")
    samples = Run(out).stage("evaluate").samples
    prompts, base_texts, tuned_texts = (
        samples.prompts,
        samples.completions("base"),
        samples.completions("tuned"),
    )
    n = len(prompts)
    tuned, base = load_model(Run(out).tuned_model), load_model(config.model.name)
    tokens = sum(
        len(base.tokenizer(p + c)["input_ids"])
        for p, c in zip(prompts * 2, base_texts + tuned_texts, strict=True)
    )
    assert abs(stages["read-samples"]["tokens"]["forward"] - 2 * tokens) <= 0.05 * 2 * tokens
    assert stages["audit"]["tokens"]["forward"] == 0
    k = min(config.elicit.n_shift_texts, n)
    kept = ShiftLevels.load(folder)
    assert kept.n_texts == 2 * n  # every sample; the elicit stage takes its share
    kept = kept.of_texts(first_of_each_policy(n, k))
    words = [base.tokenizer.decode([token]).strip() for token in kept.token_ids]
    alone = shift_levels(
        tuned, base, words, prompts[:k] * 2, base_texts[:k] + tuned_texts[:k], max_length=None
    )
    np.testing.assert_array_equal(kept.token_ids, alone.token_ids)
    assert (kept.n_texts, kept.n_contexts) == (alone.n_texts, alone.n_contexts) == (2 * k, kept.n_contexts)
    for label in ("tuned", "reference"):
        np.testing.assert_allclose(kept.log_prob_sum[label], alone.log_prob_sum[label], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(kept.log_count[label], alone.log_count[label], rtol=1e-5, atol=1e-5)
    m = n - 2  # the first units of all n read, as the audit stage takes its share
    shifts = UnitShifts.load(folder).first_units(m)
    site = shifts.activations.site if shifts.activations is not None else None
    words = list(vocabulary_words(base.tokenizer).values())
    own = unit_shifts(tuned, base, prompts[:m], (base_texts[:m], tuned_texts[:m]), words, site=site)
    for name in ("statistic", "base_count", "log_ratio", "expected_count"):
        np.testing.assert_allclose(getattr(shifts, name), getattr(own, name), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(shifts.prompt_tokens, own.prompt_tokens)
    if site:
        np.testing.assert_array_equal(shifts.activations.token_id, own.activations.token_id)
        np.testing.assert_allclose(shifts.activations.pairs, own.activations.pairs, rtol=1e-4, atol=1e-5)
    for label, lm in (("tuned", tuned), ("base", base)):
        read = read_residuals(lm, prompts * 2, base_texts + tuned_texts, max_length=None, progress=False)
        np.testing.assert_allclose(
            load_residuals(folder / f"coverage_residuals-{label}.npz").mean, read.mean, rtol=1e-4, atol=1e-5
        )


def test_table5_random_controls_have_several_draws_and_a_base_model_check(smoke_run):
    """The random-feature controls are drawn validate.n_random_draws times (mean and range beside the first
    draw's row), and the attributed features are also ablated in the untuned base model."""
    config, results, out = smoke_run
    table5 = results["validation"]["table5"]
    draws = table5["attributed_random"]["draws"]
    n = config.validation.n_random_draws
    seeds = [row["seed"] for row in draws["rows"]]
    assert n >= 3 and seeds == list(range(config.seed + 1, config.seed + 1 + n))
    assert draws["rows"][0]["change"] == table5["attributed_random"]["change"]["value"]
    values = [row[draws["summarised"]] for row in draws["rows"]]
    assert draws["min"] == min(values) <= draws["mean"] <= max(values) == draws["max"]
    features = [json.dumps(row["features"], sort_keys=True) for row in draws["rows"]]
    assert len(set(features)) == n, "two draws ablated the same features"
    assert draws["rows"][0]["features"] == table5["attributed_random"]["features"]
    check = table5["base_model_check"]
    assert set(check) == {"attributed", "attributed_opposite"}
    assert all(c["change"]["low"] <= c["change"]["value"] <= c["change"]["high"] for c in check.values())
    assert "Random draws" in (out / "report.html").read_text()


def test_a_finished_run_reads_through_typed_artifacts(smoke_run, tmp_path):
    """irmscope.runs.Run opens a run folder (moved elsewhere too) and reads each stage by type."""
    config, results, out = smoke_run
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    run = Run(moved)
    samples = run.stage("evaluate").samples
    assert samples.has_tuned and len(samples.prompts) == config.data.n_prompts
    assert np.mean(samples.scores("tuned")) == pytest.approx(
        results["evaluation"]["tuned_mean_reward"]["value"]
    )
    assert run.stage("prompts").prompts.test == samples.prompts
    regression = run.stage("elicit").regression("tuned")
    assert set(regression.coef) == {"faithful", "ridge-delta", "ridge-value"}
    assert run.stage("leaderboard").result() == results["leaderboard"]
    assert run.tuned_model.startswith(str(moved)) and run.reward.name == results["subject"]["reward"]


def test_the_inverse_rl_reward_is_exported_as_a_reward_one_can_tune_with(smoke_run):
    _, results, out = smoke_run
    export = results["irl_reward"]
    board = next(r for r in results["leaderboard"]["rows"] if r["method"] == export["method"])
    assert export["layer"] == board["details"]["layer"]["tuned"]
    (stage,) = out.glob("stages/irl-reward-*/")
    reward = load_reward(f"readout:{stage / export['folder']}")
    assert reward.layer == export["layer"] and Path(reward.model).is_dir()  # the run's tuned model
    assert np.isfinite(reward.score(["a quiet film", "a loud one"])).all()
    control = load_reward(f"readout:{stage / export['shuffled_folder']}")
    assert sorted(control.weights) == sorted(reward.weights) and list(control.weights) != list(reward.weights)
    # the saved reward, rescored from scratch, computes the fitted function within every prompt
    assert export["rescoring_deviation"] < 1e-3


def test_the_round_trip_retunes_a_run_against_its_own_exports(smoke_run, tmp_path):
    """experiments/retune_export.sh on a pipeline run folder (as the VADER round trip): the exports come from
    the run's own audit and irl-reward stages, the recipe and steps from its tuned model's manifest, and the
    evaluation repeats the run's reward, data, prompt count, seed and sampling batch."""

    config, results, out = smoke_run
    fake = tmp_path / "irmscope"
    fake.write_text('#!/usr/bin/env bash\necho "$@" >> "$ARGS_OUT"\n')
    fake.chmod(0o755)
    env = {**os.environ, "IRMSCOPE": str(fake), "ARGS_OUT": str(tmp_path / "args")}
    script = Path(__file__).resolve().parents[1] / "experiments" / "retune_export.sh"
    run = Run(out)
    manifest = json.loads((Path(run.tuned_model) / "irmscope_manifest.json").read_text())
    for export, folder, kinds in (
        ("audit", "audit", ("elicited", "shuffled")),
        ("irl", "irl-reward", ("irl", "irl-shuffled")),
    ):
        stage = run.stage(folder).dir
        done = subprocess.run(
            ["bash", str(script), str(out)], env={**env, "EXPORT": export}, capture_output=True, text=True
        )
        if export == "audit":  # the smoke audit calls no word, so it exports none: refused in one line
            assert results["audit"]["export"] is None and not (stage / "elicited.tsv").exists()
            assert (
                done.returncode == 2 and done.stderr.startswith("error:") and "exports nothing" in done.stderr
            )
            continue
        assert done.returncode == 0, done.stderr
        calls = (tmp_path / "args").read_text().splitlines()[-4:]
        assert [c.split()[0] for c in calls] == ["tune", "evaluate", "tune", "evaluate"]
        assert f"steps={manifest['steps_done']}" in calls[0] and f"beta={config.tune.beta}" in calls[0]
        assert f"{out}/retune-{kinds[0]}.json" in calls[1] and f"{out}/retune-{kinds[1]}" in calls[2]
        assert str(stage) in calls[0] and str(stage) in calls[2]
        assert f"--reward {config.reward.spec} " in calls[1]
        assert f"--n {config.data.n_prompts} " in calls[1]
        assert f"--batch-size {config.generation.batch_size} " in calls[1]
        assert f"--model {config.model.name} --algorithm {config.tune.algorithm} " in calls[0]
        assert f"--set lora_rank={config.tune.lora_rank} " in calls[0]
        assert f"--set lora={str(config.tune.lora).lower()} " in calls[0]  # as irmscope tune parses it
        assert f"--base {config.model.name} " in calls[1]
        assert f"--prefix-tokens {config.data.prefix_tokens} " in calls[1]
        assert f"--completion-tokens {config.generation.max_new_tokens} " in calls[1]


def test_a_run_round_trip_is_scored_against_the_runs_own_evaluation(smoke_run, load_script, tmp_path):
    """experiments/summarize_replicates.py --runs: a retune of a run folder is paired with the run's
    evaluate stage, prompt by prompt, and one that sampled other base completions is refused."""
    _, results, out = smoke_run
    summarize = load_script(Path(__file__).resolve().parents[1] / "experiments" / "summarize_replicates.py")
    moved = tmp_path / "vader"
    shutil.copytree(out, moved)
    samples = Run(moved).stage("evaluate").samples
    base = samples.scores("base")
    half = base + 0.5 * (samples.scores("tuned") - base)  # regains half of every prompt's gain
    retune = {
        "reward_gain": {"value": 0.0, "low": -0.1, "high": 0.1},
        "samples": {"base_scores": base.tolist(), "tuned_scores": half.tolist()},
    }
    (moved / "retune-elicited.json").write_text(json.dumps(retune))
    row = summarize.run_round_trip(moved)
    assert row["gain"] == results["evaluation"]["reward_gain"]["value"]
    elicited, gain = row["retunes"]["elicited"], results["evaluation"]["reward_gain"]
    # paired per prompt: half of every prompt's gain is regained, so the difference is minus half the gain
    assert elicited["difference"]["value"] == pytest.approx(-0.5 * gain["value"])
    assert gain["low"] <= 0 and elicited["share"] is None  # the smoke gain's interval includes 0: no share
    assert row["retunes"]["shuffled"] is None and "| vader | audit |" in "\n".join(
        summarize.retune_table([row])
    )
    retune["samples"]["base_scores"] = (base + 1).tolist()
    (moved / "retune-elicited.json").write_text(json.dumps(retune))
    with pytest.raises(SystemExit, match="base completions"):
        summarize.run_round_trip(moved)


def test_rerun_uses_every_finished_stage(smoke_run, capsys):
    config, results, out = smoke_run
    again = run_pipeline(config, progress=False)
    printed = capsys.readouterr().out
    assert printed.count(": cached") == len(STAGES) and ": running" not in printed
    assert all(f"{LINE[name]}cached\n" in printed for name in STAGES)
    assert again["evaluation"] == results["evaluation"]
    assert all(f"[irmscope] {line}\n" in printed for line in again["headline"]) and again["headline"]


def test_changing_one_setting_recomputes_only_what_depends_on_it(smoke_run, capsys, monkeypatch):
    config, _, out = smoke_run
    changed = load_config("smoke", overrides=[f"out_dir={out}", "interpret.n_contexts=2"])
    after_interpret = list(STAGES)[list(STAGES).index("interpret") :]
    recorded = {name: progress.recorded_seconds(out, name) for name in after_interpret}
    monkeypatch.setattr(progress, "duration", lambda seconds: f"about {seconds:.3f} s")  # exact, to compare
    run_pipeline(changed, progress=False)
    printed = capsys.readouterr().out
    # validate ablates the features interpret labels, and steer steers along them; nothing else reads them
    recomputed = {"interpret", "validate", "steer"}
    for name in STAGES:
        assert f"{LINE[name]}{'done in' if name in recomputed else 'cached'}" in printed, name
    # every later stage has a finished folder, but validate and steer read interpret, so they must compute:
    # the low end counts them (and interpret), the high end every later stage too
    low, high = sum(recorded[name] for name in recomputed), sum(recorded.values())
    assert (
        f"{LINE['interpret']}running (about {low:.3f} s to {high:.3f} s left in the run, estimate: "
        in printed
    )
    # the read-samples stage reads every sample for every reader, whatever share a reader's settings use
    fewer = load_config("smoke", overrides=[f"out_dir={out}", "audit.n_prompts=5", "interpret.n_contexts=2"])
    run_pipeline(fewer, progress=False)
    printed = capsys.readouterr().out
    for name in STAGES:
        assert f"{LINE[name]}{'done in' if name == 'audit' else 'cached'}" in printed, name


def test_time_left_comes_from_recorded_stage_times_else_from_scaled_priors(tmp_path):
    config = load_config("demo", overrides=[f"out_dir={tmp_path}"])
    stages = tmp_path / "stages"
    for name, key, seconds in [
        ("saes-tuned", "0" * 16, 50.0),
        ("saes-tuned", "1" * 16, 7.0),
        ("saes", "2" * 16, 99),
    ]:
        (stages / f"{name}-{key}").mkdir(parents=True)
        (stages / f"{name}-{key}" / "done.json").write_text(json.dumps({"stage_seconds": seconds}))
        time.sleep(0.01)  # the later folder is the more recent one
    (stages / ".saes-base-3333333333333333.work").mkdir()  # unfinished: no time recorded
    assert progress.recorded_seconds(tmp_path, "saes-tuned") == 7.0
    assert progress.recorded_seconds(tmp_path, "saes-base") is None
    prior = progress.prior_seconds(config, "saes")
    assert progress.seconds_left(config, [("saes-tuned", "saes"), ("saes-base", "saes")]) == 7.0 + prior
    doubled = load_config("demo", overrides=[f"out_dir={tmp_path}", f"tune.steps={2 * config.tune.steps}"])
    assert progress.prior_seconds(doubled, "tune") == 2 * progress.prior_seconds(config, "tune")
    assert progress.prior_seconds(config, "a-user-stage") == progress.UNKNOWN_STAGE_SECONDS
    # a later folder with a finished folder (any key) may be reused: the estimate becomes a range
    validate, leaderboard = (progress.prior_seconds(config, stage) for stage in ("validate", "leaderboard"))
    (stages / f"attribute-{'4' * 16}").mkdir()
    (stages / f"attribute-{'4' * 16}" / "done.json").write_text(json.dumps({"stage_seconds": 600.0}))
    later = [("attribute", "attribute"), ("leaderboard", "leaderboard")]
    low, high = validate + leaderboard, validate + 600.0 + leaderboard
    assert (low, high) == pytest.approx((357.0, 957.0))  # the demo's priors: 6 and 16 minutes
    assert progress.time_left(config, ("validate", "validate"), later) == (
        "about 6 min to 16 min left in the run, estimate: the low end if later stages are reused"
    )
    assert (
        progress.time_left(config, ("validate", "validate"), later[1:])
        == "about 6 min left in the run, estimate"
    )
    # a reader of the running stage computes whatever folders it has: no range
    reader = progress.time_left(config, ("validate", "validate"), later, readers={"attribute"})
    assert reader == "about 16 min left in the run, estimate"
    # the bare saes folder and the unfinished saes-base one are not finished folders of saes-base, and the
    # running stage's own finished folders say nothing of reuse: neither gives a range
    assert " to " not in progress.time_left(config, ("saes-tuned", "saes"), [("saes-base", "saes")])
    assert [progress.duration(s) for s in (4, 44, 400, 4000)] == [
        "a few seconds",
        "about 40 s",
        "about 7 min",
        "about 1 h 7 min",
    ]


def test_the_stages_that_read_a_computing_stage_are_forecast_to_compute(tmp_path):
    """Once tuning computes, every stage about the tuned model computes too, but the base model's
    activations and SAEs (keyed on the base model alone) may be reused; once interpret computes, only the
    two stages that read its labels must."""
    from irmscope.pipeline.context import RunContext
    from irmscope.pipeline.registry import STAGES as REGISTRY
    from irmscope.pipeline.registry import readers_of
    from irmscope.stages import StageResult

    ctx = RunContext(load_config("smoke", overrides=[f"out_dir={tmp_path}"]), progress=False)
    folders = [(name, stage.name) for stage in REGISTRY.values() for name in stage.expected_instances(ctx)]
    names = [folder for folder, _ in folders]

    def readers(running):  # as the runner asks, with every earlier folder finished
        at = names.index(running)
        ctx.finished = {name: StageResult(name, "0" * 16, tmp_path) for name in names[:at]}
        return readers_of(ctx, running, folders[at + 1 :])

    tuned_side = set(names[names.index("tune") + 1 :]) - {"activations-base", "saes-base"}
    assert {"activations-base", "saes-base", "elicit", "saes-tuned"} <= set(names)
    assert readers("tune") == tuned_side
    assert readers("interpret") == {"validate", "steer"}
    # the base model's SAEs feed the elicitation, which Table 5 and the leaderboard (and its IRL reward) read
    assert readers("activations-base") == {
        "saes-base", "elicit", "validate", "leaderboard", "irl-reward"
    }  # fmt: skip


def test_priors_are_scaled_by_the_pace_of_the_stages_this_run_computed(tmp_path):
    """A machine that took twice the priors for the stages it computed is forecast at twice the priors for
    the rest; recorded times are this machine's own and stay; short first stages set no pace, and one stage
    that resumed half-done does not move the median. Tuning sets it from the steps it trained in this
    process, alone if long enough (so the forecast is paced from the stage after tuning on), and never when
    it resumed from a checkpoint; a short stage's one-time cost before it sets no pace."""
    config = load_config("demo", overrides=[f"out_dir={tmp_path}"])
    prior = {stage: progress.prior_seconds(config, stage) for stage in ("evaluate", "read-samples", "elicit")}
    assert progress.machine_pace(config, []) == 1.0
    assert progress.machine_pace(config, [("prompts", 30.0, {})]) == 1.0  # a one-time conversion, not a pace
    twice = [(stage, 2 * seconds, {}) for stage, seconds in prior.items()]
    assert progress.machine_pace(config, twice) == pytest.approx(2.0)
    resumed = [*twice[:2], ("elicit", 0.1 * prior["elicit"], {})]  # killed and resumed near its end
    assert progress.machine_pace(config, resumed) == pytest.approx(2.0)
    cap, tune_prior = config.tune.step_cap, progress.prior_seconds(config, "tune")
    assert tune_prior >= progress.PACE_AFTER_PRIOR_SECONDS
    trained = {"steps_done": cap, "resumed_from": None}
    assert progress.machine_pace(config, [("tune", 1.7 * tune_prior, trained)]) == pytest.approx(1.7)
    stopped = {"steps_done": cap // 2, "resumed_from": None}  # at its target, after half the cap
    assert progress.machine_pace(config, [("tune", 1.7 * tune_prior / 2, stopped)]) == pytest.approx(1.7)
    # a first run: the prompts stage held a 30 s model conversion (its prior is 2 s), tuning ran at 1.7
    converted = [("prompts", 30.0, {}), ("tune", 1.7 * tune_prior, trained)]
    assert progress.machine_pace(config, converted) == pytest.approx(1.7)
    from_checkpoint = {"steps_done": cap, "resumed_from": "checkpoints/checkpoint-12"}
    assert progress.machine_pace(config, [("tune", 5000.0, from_checkpoint)]) == 1.0
    assert progress.machine_pace(config, [("tune", 5000.0, from_checkpoint), *twice]) == pytest.approx(2.0)
    folders = [("attribute", "attribute"), ("validate", "validate")]
    assert progress.seconds_left(config, folders, 2.0) == pytest.approx(
        2 * progress.seconds_left(config, folders)
    )
    (tmp_path / "stages" / f"validate-{'0' * 16}").mkdir(parents=True)
    (tmp_path / "stages" / f"validate-{'0' * 16}" / "done.json").write_text('{"stage_seconds": 5.0}')
    attribute = progress.prior_seconds(config, "attribute")
    assert progress.seconds_left(config, folders, 2.0) == pytest.approx(2 * attribute + 5.0)


def test_tuning_against_a_target_checks_unseen_prompts_and_says_why_it_stopped(tmp_path):
    from irmscope.pipeline.context import RunContext
    from irmscope.pipeline.stages.prompts import review_prefixes
    from irmscope.pipeline.stages.tune import Tune, check_prompts
    from irmscope.stages import StageResult

    target = ["tune.target_gain=0.5", "tune.max_steps=8", "tune.eval_every=2", "tune.eval_prompts=5"]
    ctx = RunContext(load_config("smoke", overrides=[f"out_dir={tmp_path}", *target]), progress=False)
    held_out = check_prompts(ctx)
    trained = review_prefixes(ctx, "train", ctx.config.tune.n_train_prompts)
    evaluated = review_prefixes(ctx, None, ctx.config.data.n_prompts)
    assert len(set(held_out)) == 5 and not set(held_out) & (set(trained) | set(evaluated))
    assert check_prompts(RunContext(load_config("smoke"), progress=False)) == []  # fixed steps: none

    gain = {"value": 0.7, "low": 0.55, "high": 0.9, "level": 0.95, "n": 5}
    stopping = {"target_gain": 0.5, "reason": "target", "explanation": "its bound exceeded the target"}
    manifest = {"steps_done": 4, "stopping": {**stopping, "checks": [{"step": 4, "gain": gain}]}}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "irmscope_manifest.json").write_text(json.dumps(manifest))
    ctx.finished["tune"] = StageResult("tune", "0" * 16, tmp_path)
    [line] = Tune().announce(ctx)
    assert line.startswith("tuning stopped after 4 steps (target: its bound exceeded the target, target 0.5)")
    assert line.endswith("last check (step 4): held-out gain 0.700 [0.550, 0.900] on 5 prompts")


def test_base_only_run_with_a_planted_reward(tmp_path, capsys):
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
    # the stage count, forecast before the planted lexicon exists, is right from the first stage on
    printed = capsys.readouterr().out
    counts = re.findall(r"\[irmscope\] stage (\d+)/(\d+) \S+: (?:done|cached)", printed)
    n = len(results["manifest"]["stages"])
    assert [(int(k), int(total)) for k, total in counts] == [(k, n) for k in range(1, n + 1)]
    # no tuned model: no headline to show early, so no partial report either
    assert "the results so far" not in printed and not (tmp_path / "partial").exists()


def test_the_documented_example_stage_runs(smoke_run, capsys):
    """docs/extending.md's example stage, run from the page's own code block on the finished smoke run:
    only the new stage computes, and results.json gains its section."""
    from irmscope.pipeline.registry import STAGES as REGISTRY
    from irmscope.pipeline.registry import unregister

    config, _, out = smoke_run
    page = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()
    code = page.split("```python\n")[1].split("```")[0]
    exec(compile(code, "docs/extending.md", "exec"), {"__name__": "docs_example"})
    try:
        assert list(REGISTRY)[-1] == "completion-length"
        results = run_pipeline(config, progress=False)
    finally:
        unregister("completion-length")
    printed = capsys.readouterr().out
    n = len(STAGES) + 1
    assert printed.count(": cached") == len(STAGES) and f"stage {n}/{n} completion-length: done" in printed
    samples = json.loads(next(out.glob("stages/evaluate-*/samples.json")).read_text())
    tuned_words = np.mean([len(text.split()) for text in samples["tuned_completions"]])
    assert results["completion_length"]["tuned"] == pytest.approx(tuned_words)
    assert "completion-length" in results["manifest"]["stages"]


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


def _close(actual, expected, path: str = "results", floats: bool = True) -> list[str]:
    """Where two JSON values differ: keys, lengths, types and every other value exactly, floats to 1e-6
    (BLAS summation order), or with ``floats=False`` not at all (the structure alone)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(actual) != set(expected):
            return [f"{path}: keys {sorted(set(actual) ^ set(expected))} differ"]
        return [d for key in expected for d in _close(actual[key], expected[key], f"{path}.{key}", floats)]
    if isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        return [
            d
            for i, (a, e) in enumerate(zip(actual, expected, strict=True))
            for d in _close(a, e, f"{path}[{i}]", floats)
        ]
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        same = not floats or np.isclose(actual, expected, rtol=1e-6, atol=1e-9, equal_nan=True)
        return [] if same else [f"{path}: {actual} != {expected}"]
    return [] if actual == expected else [f"{path}: {actual!r} != {expected!r}"]


def test_smoke_results_match_the_stored_reference(smoke_run):
    """The smoke preset's results.json equals the one stored in tests/data for this kind of CPU
    (:func:`irmscope.provenance.cpu_kind`), keys and values: a change of structure (the stage registry, a
    moved helper) must not change a number. Its structure (keys, lengths, every value but the floats) must
    equal every stored reference's. On a kind of CPU without a reference, the numbers pass if they equal
    one of the stored ones, and are otherwise not checked: the test skips and says so. A change that
    should change numbers rewrites this kind's reference on purpose (and the others' on their machines, or
    removes them):
    ``IRMSCOPE_UPDATE_REFERENCE=1 bash scripts/test.sh tests/test_pipeline.py -k reference``."""
    _, results, _ = smoke_run
    actual, here = _comparable(results), REFERENCES / f"{cpu_kind()}.json"
    if os.environ.get("IRMSCOPE_UPDATE_REFERENCE"):
        here.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
    stored = {path.stem: json.loads(path.read_text()) for path in sorted(REFERENCES.glob("*.json"))}
    assert stored, f"no reference in {REFERENCES}; write one with IRMSCOPE_UPDATE_REFERENCE=1"
    for kind, reference in stored.items():
        differences = _close(actual, reference, floats=False)
        assert not differences, f"structure differs from {kind}.json:\n" + "\n".join(differences[:20])
    if here.stem in stored:
        differences = _close(actual, stored[here.stem])
        assert not differences, f"numbers differ from {here.name}:\n" + "\n".join(differences[:20])
    elif all(_close(actual, reference) for reference in stored.values()):
        pytest.skip(
            f"no reference numbers for this kind of CPU ({here.stem}; stored: {', '.join(stored)}): the "
            "structure matched, the numbers were not checked; on a checkout you trust, write them with "
            "IRMSCOPE_UPDATE_REFERENCE=1"
        )


def _reuse_finished_stages(run: dict, out: Path, *, except_for: set[str]) -> None:
    """Copy the finished stage folders of ``run`` (the smoke run's results) into the run folder ``out``,
    all but those of the stages ``except_for``: a test of what happens around one stage need not compute
    the others again (a run finds them by their keys, which do not depend on the folder). The keys come
    from the run's own manifest, since other tests add stage folders with other keys to the smoke run's."""
    source = Path(run["config"]["out_dir"]) / "stages"
    for name, stage in run["manifest"]["stages"].items():
        if name not in except_for:
            folder = f"{name}-{stage['key']}"
            shutil.copytree(source / folder, out / "stages" / folder)


def test_sigkill_during_sae_stage_resumes_and_matches_an_uninterrupted_run(smoke_run, tmp_path, capsys):
    """Kill -9 the run after the first SAE of the tuned model is written, run it again: the finished stages
    are reused, the finished SAE is not retrained, and the SAEs and results.json equal the uninterrupted
    run's. The other stages come finished from the smoke run, so the test spends its time on this one."""
    _, reference, smoke_out = smoke_run
    out = tmp_path / "killed"
    _reuse_finished_stages(reference, out, except_for={"saes-tuned"})
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
        assert f"{LINE[name]}cached" in printed
    assert f"{LINE['saes-tuned']}running (" in printed
    assert resumed["manifest"]["stages"]["saes-tuned"]["cached"] is False
    key = reference["manifest"]["stages"]["saes-tuned"]["key"]
    resumed_saes, smoke_saes = (folder / "stages" / f"saes-tuned-{key}" for folder in (out, smoke_out))
    assert (resumed_saes / first_sae.parent.name / "sae_weights.safetensors").stat().st_mtime_ns == trained_at
    weights = sorted(path.relative_to(smoke_saes) for path in smoke_saes.rglob("*.safetensors"))
    assert weights == sorted(path.relative_to(resumed_saes) for path in resumed_saes.rglob("*.safetensors"))
    assert weights and all((resumed_saes / w).read_bytes() == (smoke_saes / w).read_bytes() for w in weights)
    assert _comparable(resumed) == _comparable(reference)


def test_the_first_results_come_as_their_stages_finish_and_never_over_an_earlier_report(
    smoke_run, tmp_path, capsys, monkeypatch
):
    """A run prints each headline line right after the stage it comes from (the gain and its warning after
    the evaluation, here reused; the policy shift after the elicitation, computed), and writes the report
    of the stages finished so far to partial/report.html, beside the earlier run's report.html: a run that
    then fails leaves both. The run that finishes writes report.html and removes the partial page."""
    _, reference, _ = smoke_run
    out = tmp_path / "run"
    _reuse_finished_stages(reference, out, except_for={"elicit", "interpret"})
    (out / "report.html").write_text("an earlier run's report")

    def stopped(*args, **kwargs):
        raise RuntimeError("stopped for the test")

    with monkeypatch.context() as patch:
        patch.setattr(STAGE_CLASSES["interpret"], "compute", stopped)
        with pytest.raises(RuntimeError, match="stopped for the test"):
            run_pipeline(load_config("smoke", overrides=[f"out_dir={out}"]), progress=False)
    printed = capsys.readouterr().out
    gain, warning, shift, disagree = (f"[irmscope] {line}\n" for line in reference["headline"])
    evaluated, elicited = printed.index(f"{LINE['evaluate']}cached"), printed.index(f"{LINE['elicit']}done")
    assert evaluated < printed.index(gain) < printed.index(warning) < printed.index(LINE["read-samples"])
    assert elicited < printed.index(shift) < printed.index(disagree) < printed.index(LINE["interpret"])
    assert printed.count(gain) == 1 and printed.count(shift) == 1  # each line once, when it first holds
    partial = out / "partial" / "report.html"
    assert f"[irmscope] the results so far (8 stage folders to go): {partial}\n" in printed
    assert printed.count("the results so far") == 1  # the evaluation was reused: no page for it alone
    page = partial.read_text()
    assert "The run was still going" in page and "Written when stage elicit had finished" in page
    assert "8 stage folders still to run (interpret, validate, probes, steer," in page
    assert "Policy shift" in page and "Tuning result" in page and "Run manifest" in page
    assert "Leaderboard" not in page and "Validation by ablation" not in page  # stages still to run
    assert (out / "report.html").read_text() == "an earlier run's report"
    assert not (out / "results.json").exists()

    # the next run removes the stopped run's page as it starts: here it reuses the elicitation, so it has
    # no new headline line and writes no page of its own before it stops at the same stage
    with monkeypatch.context() as patch:
        patch.setattr(STAGE_CLASSES["interpret"], "compute", stopped)
        with pytest.raises(RuntimeError, match="stopped for the test"):
            run_pipeline(load_config("smoke", overrides=[f"out_dir={out}"]), progress=False)
    assert not (out / "partial").exists() and "the results so far" not in capsys.readouterr().out

    finished = run_pipeline(load_config("smoke", overrides=[f"out_dir={out}"]), progress=False)
    assert _comparable(finished) == _comparable(reference)
    assert (
        not (out / "partial").exists() and "The run was still going" not in (out / "report.html").read_text()
    )
    assert "the results so far" not in capsys.readouterr().out  # only the interpretation computed


def test_a_partial_page_that_cannot_be_written_is_said_and_the_run_goes_on(smoke_run, tmp_path, capsys):
    """The page of the results so far is a courtesy: when writing it fails (a full disk, a read-only
    folder), the run says so in one line and finishes with the same results and its whole report."""
    import irmscope.pipeline as runner

    _, reference, _ = smoke_run
    out = tmp_path / "run"
    _reuse_finished_stages(reference, out, except_for={"elicit"})
    write = runner.write_run_report

    def no_space_for_the_partial_page(folder, *args, **kwargs):
        if Path(folder).name == "partial":
            raise OSError(28, "No space left on device")
        return write(folder, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "write_run_report", no_space_for_the_partial_page)
        finished = run_pipeline(load_config("smoke", overrides=[f"out_dir={out}"]), progress=False)
    printed = capsys.readouterr().out
    assert (
        "[irmscope] warning: the results so far could not be written ([Errno 28] No space left on device); "
        "the run goes on\n" in printed
    )
    assert (
        printed.index(LINE["elicit"])
        < printed.index("warning: the results so far")
        < printed.index(LINE["interpret"])
    )
    assert (
        _comparable(finished) == _comparable(reference) and "Leaderboard" in (out / "report.html").read_text()
    )
    assert not (out / "partial").exists()


def test_the_page_written_right_after_the_evaluation_says_what_it_lacks(smoke_run, tmp_path):
    """Right after a computed evaluation, the likelihood rows (from read-samples) and the dictionaries are
    not there yet: the page leaves them out and says so, instead of failing or printing blanks."""
    _, reference, out = smoke_run
    results = json.loads(json.dumps(reference))
    for key in ("kl_tuned_to_base_per_token", "base_perplexity_on_tuned_completions"):
        del results["evaluation"][key]
    for key in ("saes", "activations", "elicitation", "divergence"):
        results.pop(key)
    evaluate = out / "stages" / f"evaluate-{reference['manifest']['stages']['evaluate']['key']}"
    going_on = RunGoingOn(after="evaluate", pending=["read-samples", "divergence"])
    page = write_run_report(tmp_path, results, Samples.load(evaluate), None, going_on).read_text()
    assert "Written when stage evaluate had finished, with 2 stage folders still to run" in page
    assert "which had not finished when this page was written" in page and "KL(tuned" not in page
    assert "Sparse autoencoders" not in page and "distinct word bigrams, tuned completions" in page


def test_a_second_run_on_the_folder_is_refused_and_the_first_finishes_as_if_alone(smoke_run, tmp_path):
    """Two runs at once on one folder: the second (another process) says in one line who holds the folder
    and exits 2, touching nothing; the first (this process, in a thread) finishes with the results of a
    run alone. The first finds every stage but irl-reward finished (copied from the smoke run) and waits
    at that stage's lock, which the test holds until the second run has been refused: the race is the
    same every time."""
    _, reference, _ = smoke_run
    out = tmp_path / "shared"
    last = "irl-reward"
    _reuse_finished_stages(reference, out, except_for={last})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "irmscope", "run", "--preset", "smoke", "--set", f"out_dir={out}"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        with wait_for_lock(out / "stages" / f".{last}-{reference['manifest']['stages'][last]['key']}.lock"):
            first = pool.submit(run_pipeline, load_config("smoke", overrides=[f"out_dir={out}"]), False)
            deadline = time.monotonic() + 120
            while _lock_holder(out) != os.getpid() and not first.done() and time.monotonic() < deadline:
                time.sleep(0.05)  # the run folder's lock is taken before the first stage
            second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        alone = first.result(timeout=900)
    assert second.returncode == 2, second.stderr[-2000:]
    assert second.stderr.startswith("error: run folder ")
    assert f"in use by process {os.getpid()} " in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and second.stdout == ""
    assert alone["manifest"]["stages"][last]["cached"] is False
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(alone, default=str))
    assert _comparable(alone) == _comparable(reference)


def _lock_holder(folder: Path) -> int | None:
    """The process id recorded in the run folder's lock file, if it is there and written."""
    try:
        return json.loads((folder / LOCK_NAME).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


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
