"""The pipeline on the smoke preset: outputs, caching of finished stages, recomputing only what changed."""

import json

import pytest

from irmscope.config import load_config
from irmscope.pipeline import run_pipeline


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    config = load_config("smoke", overrides=[f"out_dir={out}"])
    return config, run_pipeline(config, progress=False), out


def test_smoke_run_writes_results_and_report(smoke_run):
    config, results, out = smoke_run
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results, default=str))
    mean = results["base_model"]["mean_reward"]
    assert mean["low"] <= mean["value"] <= mean["high"]
    assert results["base_model"]["n_completions"] == config.data.n_prompts
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Base model reward" in page
    assert set(results["manifest"]["stages"]) == {"prompts", "completions", "rewards", "activations"}


def test_rerun_uses_every_finished_stage(smoke_run, capsys):
    config, results, out = smoke_run
    again = run_pipeline(config, progress=False)
    printed = capsys.readouterr().out
    assert printed.count(": cached") == 4
    assert again["base_model"] == results["base_model"]


def test_changing_the_reward_recomputes_only_the_reward(smoke_run, capsys, tmp_path):
    config, _, out = smoke_run
    lexicon = tmp_path / "planted.tsv"
    lexicon.write_text("the\t2.0\na\t-1.0\n")
    changed = load_config("smoke", overrides=[f"out_dir={out}", f"reward.spec=lexicon:{lexicon}"])
    run_pipeline(changed, progress=False)
    printed = capsys.readouterr().out
    assert "stage prompts: cached" in printed and "stage completions: cached" in printed
    assert "stage activations: cached" in printed
    assert "stage rewards: done" in printed
