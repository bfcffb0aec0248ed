"""The command line. Commands that load models run in this process through ``run_cli`` (``cli.main``, what
the console script calls), so the libraries load once per worker; the quick checks of what a user's shell
sees (exit codes, one-line errors, nothing loaded before a bad name is refused) run in subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irmscope.locking import folder_lock, output_lock

IRMSCOPE = [sys.executable, "-m", "irmscope"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*IRMSCOPE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_reward_prints_eq3_value(run_cli):
    code, out, err = run_cli(["reward", "This movie was great fun"])
    assert code == 0, err
    assert out.strip() == "1.0800"  # (great 3.1 + fun 2.3) / 5


def test_models_lists_the_default():
    result = run("models")
    assert result.returncode == 0
    assert (
        "smollm2-135m" in result.stdout
        and "gemma3-270m" in result.stdout
        and "tiny-gpt_neox" in result.stdout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("reward", "--reward", "lexicon:/no/such.tsv", "x"), "does not exist"),
        (("config", "show", "--set", "data.n_promts=3"), "unknown config key"),
        (("run", "--preset", "smoke", "--set", "model.name=tiny-bert"), "unknown model"),
        (("run", "--preset", "smoke", "--set", "data.source=/no/such/file.parquet"), "no such file"),
        (("compare", "/no/such/run", "--out", "/no/such/out"), "holds no results.json"),
        (("edit", "/no/such/run"), "holds no results.json"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = run(*args, "--set", f"out_dir={tmp_path}") if args[0] == "run" else run(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_names_and_folders_fail_before_the_model_libraries_load(tmp_path):
    """Every command that names a model or a review source checks them (compare and edit their run folders,
    tune its settings), and every command that locks its output looks at the lock, before torch and
    transformers load, so those errors come in about a second instead of after the libraries' import;
    listing the models loads neither."""
    run_with = ["run", "--preset", "smoke", "--set", f"out_dir={tmp_path / 'run'}", "--set"]
    held = tmp_path / "held"  # outputs this test process writes (holds the lock of) while the commands run
    in_use = f"is in use by process {os.getpid()} "
    smoke_in_held = ["run", "--preset", "smoke", "--set", f"out_dir={held / 'run'}"]
    cases = [
        ([*run_with, "model.name=tiny-bert"], "unknown model"),
        ([*run_with, "model.tuned=/no/such/model"], "no such model folder"),
        ([*run_with, "data.source=/no/such/file.parquet"], "no such file or folder"),
        ([*run_with, "probes.dpo_model=tiny-bert"], "unknown model"),
        (["compare", "/no/such/run", "--out", str(tmp_path / "compared")], "holds no results.json"),
        (["edit", "/no/such/run"], "holds no results.json"),
        (["tune", "--out", str(tmp_path / "tuned"), "--set", "stepz=3"], "unknown config key"),
        (["tune", "--out", str(tmp_path / "tuned"), "--model", "tiny-bert"], "unknown model"),
        (["evaluate", "--tuned", "tiny-llama", "--data", "/no/such/file.parquet"], "no such file or folder"),
        (["divergence", "--tuned", "/no/such/model"], "no such model folder"),
        (["audit", "--tuned", "tiny-bert", "--out", str(tmp_path / "audit")], "unknown model"),
        (["cache-activations", "--out", str(tmp_path / "cache"), "--model", "tiny-bert"], "unknown model"),
        (["planted-lexicon", "--out", str(tmp_path / "p.tsv"), "--data", "/no/such.csv"], "no such file"),
        (["train-classifier", "--out", str(tmp_path / "c"), "--data", "/no/such.csv"], "no such file"),
        (["train-sae", "--cache", ".", "--site", "s", "--out", str(tmp_path / "s"), "--model", "x"], "model"),
        (smoke_in_held, f"run folder {held / 'run'} {in_use}"),
        (["cache-activations", "--out", str(held / "cache"), "--model", "tiny-llama"], in_use),
        (["train-sae", "--cache", ".", "--site", "s", "--out", str(held / "sae")], f"sae {in_use}"),
        (["audit", "--tuned", "tiny-llama", "--base", "tiny-llama", "--out", str(held / "audit")], in_use),
    ]
    script = """
import json, sys
from irmscope.cli import main
codes = []
for argv in json.loads(sys.argv[1]) + [["models"]]:
    try:
        main(argv)
    except SystemExit as stop:
        codes.append(stop.code)
print(json.dumps({"codes": codes, "loaded": [m for m in ("torch", "transformers") if m in sys.modules]}))
"""
    command = [sys.executable, "-c", script, json.dumps([argv for argv, _ in cases])]
    with (
        folder_lock(held / "run"),
        output_lock(held / "cache"),
        output_lock(held / "sae"),
        output_lock(held / "audit"),
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"codes": [2] * len(cases) + [0], "loaded": []}, outcome
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(cases)
    for (argv, message), error in zip(cases, errors, strict=True):
        assert message in error, (argv, error)
    assert [path.name for path in tmp_path.iterdir()] == ["held"]  # nothing was written
    assert sorted(path.name for path in held.rglob("*")) == ["run"]  # the released locks left nothing


def test_config_show_is_json():
    result = run("config", "show", "--preset", "smoke")
    assert result.returncode == 0
    assert json.loads(result.stdout)["model"]["name"] == "tiny-llama"


def test_tune_against_a_target_says_why_it_stopped(run_cli, tmp_path):
    settings = ["target_gain=-100", "max_steps=4", "eval_every=2", "eval_prompts=3", "batch_size=2"]
    settings += ["group_size=2", "max_completion_tokens=3", "n_train_prompts=4"]
    args = [arg for setting in settings for arg in ("--set", setting)]
    code, out, err = run_cli(["tune", "--model", "tiny-llama", "--out", str(tmp_path / "t"), *args])
    assert code == 0, err
    assert "(2 steps, " in out and "stopped: the held-out gain's 95% lower bound" in out
    manifest = json.loads((tmp_path / "t" / "model" / "irmscope_manifest.json").read_text())
    assert manifest["stopping"]["checks"][0]["gain"]["n"] == 3 and manifest["n_train_prompts"] == 4


def test_tune_evaluate_divergence_on_a_tiny_model(run_cli, tmp_path):
    settings = ["steps=1", "batch_size=2", "group_size=2", "max_completion_tokens=3", "n_train_prompts=4"]
    args = [arg for setting in settings for arg in ("--set", setting)]
    code, _, err = run_cli(["tune", "--model", "tiny-llama", "--out", str(tmp_path / "t"), *args])
    assert code == 0, err
    assert (tmp_path / "t" / "model" / "irmscope_manifest.json").is_file()
    tuned = ["--tuned", str(tmp_path / "t" / "model"), "--base", "tiny-llama"]
    sizes = ["--n", "3", "--completion-tokens", "3", "--prefix-tokens", "6"]
    code, out, err = run_cli(["evaluate", *tuned, *sizes, "--out", str(tmp_path / "eval.json")])
    assert code == 0, err
    assert "reward_gain" in out and json.loads((tmp_path / "eval.json").read_text())["n_prompts"] == 3
    code, out, err = run_cli(["divergence", *tuned, "--top", "2", "--plot", str(tmp_path / "d.png")])
    assert code == 0, err
    assert "top 2 layers" in out and (tmp_path / "d.png").stat().st_size > 1000


def test_tune_typo_in_a_setting():
    result = run("tune", "--model", "tiny-llama", "--out", "unused", "--set", "stepz=3")
    assert result.returncode == 2 and "unknown config key 'tune.stepz'" in result.stderr


def test_train_sae_on_a_truncated_cache_names_the_shard(run_cli, tmp_path):
    from irmscope.activations import cache_activations
    from irmscope.activations.store import shard_name
    from irmscope.models import load_model

    texts = [f"review {i}: the plot was {'thin' if i % 2 else 'tight'}" for i in range(6)]
    site = "blocks.0.mlp.hook_post"
    cache = tmp_path / "cache"
    cache_activations(load_model("tiny-llama"), texts, [site], cache, texts_per_shard=2, progress=False)
    shard = cache / shard_name(1)
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    code, _, err = run_cli(["train-sae", "--cache", str(cache), "--site", site, "--out", str(tmp_path / "s")])
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and shard_name(1) in lines[0], err
    assert "rerun `irmscope cache-activations`" in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("extra, expected", [([], 128), (["--batch-size", "16"], 16)])
def test_evaluate_samples_in_the_batch_it_is_given(run_cli, monkeypatch, extra, expected):
    """Sampling is seeded per batch, so a retune's evaluation pairs with an original evaluation's base
    completions only at the original's batch size: --batch-size reaches the sampler (default 128)."""
    import irmscope.tune

    seen = {}

    def fake(tuned, base, *, sampling, **kwargs):
        seen["batch"] = sampling.batch_size
        raise SystemExit(0)

    monkeypatch.setattr(irmscope.tune, "evaluate_models", fake)
    code, _, err = run_cli(["evaluate", "--tuned", "tiny-llama", *extra])
    assert code == 0, err
    assert seen["batch"] == expected
