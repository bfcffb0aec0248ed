"""The recorded experiments load, and the published documents cite no machine-specific source.

Every number in README.md and docs/ must come with a committed config under experiments/ and the command
that regenerates it; these checks keep the configs valid and keep out paths of a particular machine, scratch
folders, issue notes as sources, and papers cited by an internal seed number.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from irmscope.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
PUBLISHED = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *EXPERIMENTS]
FORBIDDEN = ("/work/", "/tmp/", "closing note")


def test_there_are_experiments() -> None:
    """One config per finding: the VADER run, the planted run, the DPO model and the paper preset (the edit
    and the comparison are commands on finished runs, given in the headers, see below)."""
    assert {p.name for p in EXPERIMENTS} >= {"vader.yaml", "planted.yaml", "dpo.yaml", "paper.yaml"}


def _run_command(path: Path) -> re.Match[str]:
    """The header's ``irmscope run`` command for this file (with the preset it names, if any)."""
    found = re.search(
        rf"irmscope run (?:--preset (\w+) )?--config experiments/{re.escape(path.name)}\b", path.read_text()
    )
    assert found, f"{path.name}'s header must give the command that runs it"
    return found


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_each_experiment_loads(path: Path) -> None:
    """Each file loads with the preset its header's command names (demo when it names none)."""
    preset = _run_command(path).group(1) or "demo"
    config = load_config(preset, path)
    assert isinstance(config, RunConfig) and config.preset == preset
    assert not Path(config.out_dir).is_absolute(), "runs go under a relative folder such as runs/NAME"
    if config.model.tuned is not None:
        assert not Path(config.model.tuned).is_absolute()


def test_the_paper_experiment_has_the_paper_sizes() -> None:
    config = load_config("paper", ROOT / "experiments" / "paper.yaml")
    assert config.data.n_prompts == 1000 and config.probes.n_rating_texts == 2000
    assert not config.model.tuned and config.tune.algorithm == "grpo"  # the run tunes its own model


def test_the_dpo_experiment_studies_the_model_the_vader_leaderboard_reads() -> None:
    dpo, vader = (load_config("demo", ROOT / "experiments" / name) for name in ("dpo.yaml", "vader.yaml"))
    assert dpo.model.tuned == vader.probes.dpo_model and dpo.data.source == vader.data.source
    assert "irmscope tune --out runs/dpo --algorithm dpo" in (ROOT / "experiments" / "dpo.yaml").read_text()


def test_the_edit_and_the_comparison_are_given_on_finished_runs() -> None:
    headers = "".join(path.read_text() for path in EXPERIMENTS)
    assert "irmscope edit runs/vader " in headers and "irmscope compare runs/vader runs/planted " in headers


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_specific_source(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [needle for needle in FORBIDDEN if needle in text]
    assert not found, f"{path.relative_to(ROOT)} cites {found}: cite a committed config and its command"


def test_papers_are_cited_by_title_not_seed_number() -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "src" / "irmscope").rglob("*.py"))]
    cited = [str(p.relative_to(ROOT)) for p in files if "seed 00" in p.read_text(encoding="utf-8")]
    assert not cited, f"cite the paper by title and authors, not 'seed 00N': {cited}"


def test_findings_name_each_experiment() -> None:
    findings = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    for path in EXPERIMENTS:
        assert f"experiments/{path.name}" in findings


def test_the_planted_pipeline_script_runs_planted_yaml_on_each_replicate(tmp_path: Path) -> None:
    """experiments/planted_pipeline.sh: a seed without its replicate is refused in one line (exit 2); with
    one, the command it runs loads as the planted config pointed at that replicate's model and lexicon."""
    import shlex
    import subprocess

    script, fake = ROOT / "experiments" / "planted_pipeline.sh", tmp_path / "irmscope"
    fake.write_text('#!/usr/bin/env bash\nprintf "%q " "$@" > "$ARGS_OUT"\n')
    fake.chmod(0o755)
    env = {
        **os.environ,
        "IRMSCOPE": str(fake),
        "OUT": str(tmp_path / "reps"),
        "ARGS_OUT": str(tmp_path / "args"),
    }
    missing = subprocess.run(["bash", str(script), "7"], env=env, capture_output=True, text=True)
    assert (
        missing.returncode == 2
        and missing.stderr.startswith("error:")
        and "planted_replicates.sh 7" in missing.stderr
    )
    replicate = tmp_path / "reps" / "seed7"
    (replicate / "tuned" / "model").mkdir(parents=True)
    (replicate / "tuned" / "model" / "config.json").write_text("{}")
    (replicate / "lexicon.tsv").write_text("film\t1.0\n")
    subprocess.run(["bash", str(script), "7"], env=env, check=True, capture_output=True)
    args = shlex.split((tmp_path / "args").read_text())
    assert args[:3] == ["run", "--config", "experiments/planted.yaml"]
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    config = load_config("demo", ROOT / "experiments" / "planted.yaml", overrides)
    assert config.seed == 7 and config.model.tuned == f"{replicate}/tuned/model"
    assert (
        config.reward.spec == f"lexicon:{replicate}/lexicon.tsv" and config.out_dir == f"{replicate}/pipeline"
    )


def test_the_replicates_script_runs_each_recipe_into_its_own_folder(tmp_path: Path) -> None:
    """experiments/planted_replicates.sh: recipe 2 tunes to a target, recipe 1 for a fixed 40 steps and
    recipe 0 (the older seed-0 study's) for 56 steps at the defaults, recipe 3 with unscaled advantages,
    recipe 4 the same for 112 steps, each in its own folder; an unknown
    recipe is refused in one line."""
    import subprocess

    script = ROOT / "experiments" / "planted_replicates.sh"
    args, env = _fake_irmscope(tmp_path)
    expected = {
        "2": ("planted-replicates", "target_gain=1.0"),
        "1": ("planted-replicates-recipe1", "steps=40"),
        "0": ("planted-replicates-recipe0", "steps=56"),
        "3": ("planted-replicates-recipe3", "scale_rewards=none"),
        "4": ("planted-replicates-recipe4", "steps=112"),
    }
    for version, (folder, setting) in expected.items():
        out = tmp_path / "runs" / "planted-replicates"
        run_env = {**env, "RECIPE_VERSION": version, "OUT": str(out)}
        subprocess.run(["bash", str(script), "4"], env=run_env, check=True, capture_output=True)
        tune = next(c for c in args.read_text().splitlines()[::-1] if c.startswith("tune"))
        assert f"--out {tmp_path / 'runs' / folder}/seed4/tuned" in tune and f"--set {setting}" in tune
        assert (setting == "steps=56") == ("learning_rate" not in tune)  # recipe 0: the defaults
    wrong = subprocess.run(
        ["bash", str(script), "4"], env={**env, "RECIPE_VERSION": "9"}, capture_output=True, text=True
    )
    assert wrong.returncode == 2 and wrong.stderr.startswith("error:") and "RECIPE_VERSION" in wrong.stderr


def test_a_replicate_continues_from_an_earlier_recipes_last_checkpoint(tmp_path: Path) -> None:
    """CONTINUE_FROM: the seed's tuning finds the earlier run's newest checkpoint (by step, not by name) when
    its tune command runs, even where a started trainer left an empty checkpoints folder; the source is
    recorded; a tuning of the seed's own is left alone; a different lexicon, an earlier run without a
    checkpoint, or one tuned with other settings than those given (steps aside), is refused in one line."""
    import subprocess

    script = ROOT / "experiments" / "planted_replicates.sh"
    args, env = _fake_irmscope(tmp_path)
    fake = Path(env["IRMSCOPE"])  # the stand-in also lists the checkpoints its tune command finds
    fake.write_text(fake.read_text() + '[ "$1" != tune ] || ls "$3/checkpoints" >> "$ARGS_OUT"\n')
    earlier = tmp_path / "runs" / "planted-replicates-recipe3" / "seed4"
    for step in (9, 56, 10):
        (earlier / "tuned" / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (earlier / "tuned" / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(
            str(step)
        )
    (earlier / "lexicon.tsv").write_text("movie\t2.0\n")
    later = tmp_path / "runs" / "planted-replicates-recipe4" / "seed4"
    (later / "tuned" / "checkpoints").mkdir(parents=True)  # a run started and killed before its first save
    (later / "lexicon.tsv").write_text("movie\t2.0\n")
    run_env = {
        **env,
        "RECIPE_VERSION": "4",
        "OUT": str(tmp_path / "runs" / "planted-replicates"),
        "CONTINUE_FROM": str(earlier.parent),
    }
    subprocess.run(["bash", str(script), "4"], env=run_env, check=True, capture_output=True)
    lines = args.read_text().splitlines()
    tune_at = next(i for i, line in enumerate(lines) if line.startswith("tune"))
    assert "steps=112" in lines[tune_at] and lines[tune_at + 1] == "checkpoint-56"  # there when tuning began
    assert (later / "tuned" / "checkpoints" / "checkpoint-56" / "trainer_state.json").read_text() == "56"
    assert (later / "continued_from").read_text().strip() == str(
        earlier / "tuned" / "checkpoints" / "checkpoint-56"
    )
    (later / "tuned" / "checkpoints" / "checkpoint-60").mkdir()  # the continued run under way: left alone
    subprocess.run(["bash", str(script), "4"], env=run_env, check=True, capture_output=True)
    assert sorted(p.name for p in (later / "tuned" / "checkpoints").iterdir()) == [
        "checkpoint-56",
        "checkpoint-60",
    ]
    other = tmp_path / "runs" / "planted-replicates-recipe4" / "seed5"
    other.mkdir()
    (other / "lexicon.tsv").write_text("film\t-1.0\n")
    (earlier.parent / "seed5").mkdir()
    (earlier.parent / "seed5" / "lexicon.tsv").write_text("movie\t2.0\n")
    wrong = subprocess.run(["bash", str(script), "5"], env=run_env, capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error:") and "same lexicon" in wrong.stderr
    assert not (other / "tuned").exists()
    (other / "lexicon.tsv").write_text("movie\t2.0\n")  # the same lexicon, but nothing to continue from
    empty = subprocess.run(["bash", str(script), "5"], env=run_env, capture_output=True, text=True)
    assert empty.returncode == 2 and empty.stderr.startswith("error:") and "no checkpoint" in empty.stderr
    manifest = earlier.parent / "seed5" / "tuned" / "model" / "irmscope_manifest.json"
    manifest.parent.mkdir(parents=True)  # tuned with recipe 2's KL coefficient, not recipe 4's
    manifest.write_text('{"hyperparameters": {"beta": 0.02, "learning_rate": 0.001, "scale_rewards": null}}')
    other_recipe = subprocess.run(["bash", str(script), "5"], env=run_env, capture_output=True, text=True)
    assert other_recipe.returncode == 2 and other_recipe.stderr.startswith("error:")
    assert "beta=0.5 (was 0.02)" in other_recipe.stderr and "learning_rate" not in other_recipe.stderr


def _fake_irmscope(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A stand-in ``irmscope`` that records its arguments, and the environment that makes the experiment
    scripts call it."""
    fake = tmp_path / "irmscope"
    fake.write_text('#!/usr/bin/env bash\necho "$@" >> "$ARGS_OUT"\n')
    fake.chmod(0o755)
    return tmp_path / "args", {**os.environ, "IRMSCOPE": str(fake), "ARGS_OUT": str(tmp_path / "args")}


def test_the_noise_null_tunes_with_the_recipe_it_is_the_null_of(tmp_path: Path) -> None:
    """experiments/noise_null.sh: recipe 2's settings for 40 steps by default, recipe 3's (unscaled
    advantages, 56 steps) in their own folder with RECIPE_VERSION=3, recipe 4's (112 steps) with 4, which
    can continue from the recipe-3 null's checkpoint; another recipe is refused."""
    import subprocess

    script = ROOT / "experiments" / "noise_null.sh"
    args, env = _fake_irmscope(tmp_path)
    expected = {
        "2": ("noise-null", "steps=40"),
        "3": ("noise-null-recipe3", "scale_rewards=none"),
        "4": ("noise-null-recipe4", "steps=112"),
    }
    for version, (folder, setting) in expected.items():
        run_env = {**env, "RECIPE_VERSION": version, "OUT": str(tmp_path / "runs" / "noise-null")}
        subprocess.run(["bash", str(script), "2"], env=run_env, check=True, capture_output=True)
        tune = next(c for c in args.read_text().splitlines()[::-1] if c.startswith("tune"))
        assert f"--out {tmp_path / 'runs' / folder}/seed2/tuned" in tune and "--reward noise:2" in tune
        assert f"--set {setting}" in tune
    earlier = tmp_path / "runs" / "noise-null-recipe3" / "seed3" / "tuned" / "checkpoints" / "checkpoint-56"
    earlier.mkdir(parents=True)
    run_env = {
        **env,
        "RECIPE_VERSION": "4",
        "OUT": str(tmp_path / "runs" / "noise-null"),
        "CONTINUE_FROM": str(tmp_path / "runs" / "noise-null-recipe3"),
    }
    subprocess.run(["bash", str(script), "3"], env=run_env, check=True, capture_output=True)
    assert (
        tmp_path / "runs" / "noise-null-recipe4" / "seed3" / "tuned" / "checkpoints" / "checkpoint-56"
    ).is_dir()
    wrong = subprocess.run(
        ["bash", str(script), "2"], env={**env, "RECIPE_VERSION": "1"}, capture_output=True, text=True
    )
    assert wrong.returncode == 2 and wrong.stderr.startswith("error:") and "RECIPE_VERSION" in wrong.stderr


def test_the_retune_script_tunes_a_replicate_against_the_audit_export_and_its_control(tmp_path: Path) -> None:
    """experiments/retune_export.sh on a planted replicate: without the export it is refused in one line
    (exit 2) that names the command to run; with it, it tunes against the audit's words, then their
    shuffled control, with the original tune's recipe, seed and steps (read from the tuned model's
    manifest), and scores each retune with the original lexicon."""
    import json
    import subprocess

    script = ROOT / "experiments" / "retune_export.sh"
    args, env = _fake_irmscope(tmp_path)
    replicate = tmp_path / "seed7"
    (replicate / "tuned" / "model").mkdir(parents=True)
    manifest = {
        "steps_done": 12,
        "seed": 7,
        "base_model": "tiny-llama",
        "algorithm": "rloo",
        "hyperparameters": {"learning_rate": 0.001, "beta": 0.02, "target_gain": 1.0, "lora_rank": 8},
    }
    (replicate / "tuned" / "model" / "irmscope_manifest.json").write_text(json.dumps(manifest))
    for export in ("audit", "irl"):
        missing = subprocess.run(
            ["bash", str(script), str(replicate)],
            env={**env, "EXPORT": export},
            capture_output=True,
            text=True,
        )
        assert missing.returncode == 2 and missing.stderr.startswith("error:"), missing.stderr
        assert f"planted_{'replicates' if export == 'audit' else 'pipeline'}.sh 7" in missing.stderr
    audit = replicate / "audit"
    audit.mkdir()
    for name in ("elicited.tsv", "elicited-shuffled.tsv"):
        (audit / name).write_text("good\t1\n")
    subprocess.run(
        ["bash", str(script), str(replicate)],
        env={**env, "EVAL_BATCH": "16"},
        check=True,
        capture_output=True,
    )
    calls = args.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["tune", "evaluate", "tune", "evaluate"]
    assert f"--reward lexicon:{audit}/elicited.tsv " in calls[0] and "--seed 7 " in calls[0]
    settings = {"steps": 12, "learning_rate": 0.001, "beta": 0.02, "lora_rank": 8}
    assert all(f"--set {k}={v}" in calls[0] for k, v in settings.items())
    assert "target_gain" not in calls[0]  # a retune runs for the original's steps, not to its target
    assert "--model tiny-llama --algorithm rloo" in calls[0] and "--base tiny-llama" in calls[1]
    assert f"--reward lexicon:{audit}/elicited-shuffled.tsv " in calls[2]
    assert f"--reward lexicon:{replicate}/lexicon.tsv" in calls[1] and "--batch-size 16" in calls[1]
    assert f"{replicate}/retune-elicited.json" in calls[1]
    wrong = subprocess.run(
        ["bash", str(script), str(replicate)], env={**env, "EXPORT": "x"}, capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "EXPORT must be" in wrong.stderr


def test_a_demo_recipe_trial_runs_the_pipelines_tune_and_evaluate_stages(tmp_path: Path, load_script) -> None:
    """experiments/demo_recipe.py on the smoke preset: the row names the steps the override asked for,
    the tune stage's own time and tokens, and the evaluate stage's gain; a second call reads the finished
    stages back instead of tuning again."""
    recipe = load_script(ROOT / "experiments" / "demo_recipe.py")
    row = recipe.trial(str(tmp_path / "trial"), ["tune.steps=2"], preset="smoke")
    assert row["steps_done"] == 2 and row["tune_seconds"] > 0 and row["tune_tokens"]["backward"] > 0
    assert row["gain"]["low"] <= row["gain"]["value"] <= row["gain"]["high"] and row["n_prompts"] >= 2
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "trial" / "stages").iterdir()) == [
        "evaluate", "prompts", "tune",
    ]  # fmt: skip
    assert recipe.trial(str(tmp_path / "trial"), ["tune.steps=2"], preset="smoke") == row
