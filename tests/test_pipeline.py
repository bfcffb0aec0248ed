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
    gain = results["evaluation"]["reward_gain"]
    assert gain["low"] <= gain["value"] <= gain["high"]
    assert results["evaluation"]["n_prompts"] == config.data.n_prompts
    assert results["tune"]["steps_done"] == config.tune.steps
    assert len(results["divergence"]["top_layers"]) == config.activations.n_layers
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Table 7" in page and "Training curves" in page
    assert set(results["manifest"]["stages"]) == {"prompts", "tune", "evaluate", "divergence", "activations"}


def test_rerun_uses_every_finished_stage(smoke_run, capsys):
    config, results, out = smoke_run
    again = run_pipeline(config, progress=False)
    printed = capsys.readouterr().out
    assert printed.count(": cached") == 5
    assert again["evaluation"] == results["evaluation"]


def test_changing_one_setting_recomputes_only_what_depends_on_it(smoke_run, capsys):
    config, _, out = smoke_run
    changed = load_config("smoke", overrides=[f"out_dir={out}", "activations.max_length=24"])
    run_pipeline(changed, progress=False)
    printed = capsys.readouterr().out
    for name in ("prompts", "tune", "evaluate", "divergence"):
        assert f"stage {name}: cached" in printed
    assert "stage activations: done" in printed


def test_base_only_run(tmp_path):
    config = load_config("smoke", overrides=[f"out_dir={tmp_path}", "tune.algorithm=none"])
    results = run_pipeline(config, progress=False)
    assert results["divergence"] is None and "tune" not in results
    assert results["evaluation"]["base_mean_reward"]["n"] == config.data.n_prompts
