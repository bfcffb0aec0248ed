"""benchmarks/bench_pipeline.py: the table's arithmetic on fabricated timings, and the script end to end on
a run folder of the smoke preset's config (tiny model, so the prices are measured in seconds)."""

import json
import sys
from pathlib import Path

import pytest

from irmscope.config import load_config
from irmscope.provenance import describe_machine

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "bench_pipeline.py"


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script(SCRIPT)


def _tokens(forward=0, backward=0, sampled=0):
    return {"forward": forward, "backward": backward, "sampled": sampled}


STAGES = {
    "fast": {"seconds": 2.5, "tokens": _tokens(forward=1000)},  # floor 2.0
    "slow": {"seconds": 10.0, "tokens": _tokens(forward=1000)},  # floor 2.0
    "timed": {
        "seconds": 12.0,
        "tokens": _tokens(forward=1000),
        "parts": {"a": 1.0, "b": 7.4, "c": 2.0, "d": 0.1},
    },
    "sampler": {"seconds": 45.0, "tokens": _tokens(backward=100, sampled=400)},  # floor 1.0 + 8.0
    "saes-tuned": {"seconds": 3.0, "tokens": _tokens()},
    "old": {"seconds": 1.0, "tokens": None},
    # bfloat16 passes, priced apart (the stages above have no such key, as runs from before them)
    "halved": {"seconds": 1.5, "tokens": {**_tokens(), "forward_bfloat16": 1000, "sampled_bfloat16": 100}},
    "tuned-in-bf16": {"seconds": 0.5, "tokens": {**_tokens(), "backward_bfloat16": 50}},  # floor 0.25
}
PRICE = {
    "forward": 0.002,
    "backward": 0.01,
    "sampled": 0.02,
    "forward_bfloat16": 0.001,
    "sampled_bfloat16": 0.01,
    "backward_bfloat16": 0.005,
}


def test_floors_ratios_and_reasons_on_fabricated_timings(bench):
    rows = {row["stage"]: row for row in bench.pipeline_table(STAGES, PRICE, sampling_slowdown=(6, 64, 1.4))}
    assert rows["fast"]["floor_s"] == pytest.approx(2.0)
    assert rows["fast"]["ratio"] == pytest.approx(1.25)
    assert rows["fast"]["why"] is None  # within 3x: nothing to explain
    assert rows["slow"]["ratio"] == pytest.approx(5.0)
    assert "8 s above a floor that is 100% forward tokens" in rows["slow"]["why"]
    assert "batch" not in rows["slow"]["why"]  # the sampling batch is named only where sampling dominates
    assert rows["timed"]["why"].endswith(
        "its slowest parts (timed by the stage, passes included): b 7 s, c 2 s, a 1 s"
    )
    assert rows["sampler"]["floor_s"] == pytest.approx(9.0)
    assert rows["sampler"]["ratio"] == pytest.approx(5.0)
    assert "89% sampled" in rows["sampler"]["why"]
    assert "batch 6 costs 1.4x batch 64's" in rows["sampler"]["why"]
    assert rows["saes-tuned"]["floor_s"] == 0 and rows["saes-tuned"]["ratio"] is None
    assert "trains SAEs" in rows["saes-tuned"]["why"]
    assert rows["old"]["floor_s"] is None and "no token counts" in rows["old"]["why"]
    assert rows["halved"]["floor_s"] == pytest.approx(2.0) and rows["halved"]["why"] is None
    assert rows["fast"]["forward_bfloat16_tokens"] == 0  # an older run's stage: none of them
    total = rows["total"]
    assert rows["tuned-in-bf16"]["floor_s"] == pytest.approx(0.25) and rows["tuned-in-bf16"]["why"] is None
    assert total["wall_s"] == pytest.approx(75.5)
    assert total["floor_s"] == pytest.approx(17.25)
    assert total["ratio"] == pytest.approx(75.5 / 17.25)
    assert (total["forward_tokens"], total["backward_tokens"], total["sampled_tokens"]) == (3000, 100, 400)
    assert (total["forward_bfloat16_tokens"], total["sampled_bfloat16_tokens"]) == (1000, 100)
    assert total["backward_bfloat16_tokens"] == 50
    markdown = bench.markdown_table(list(rows.values())).splitlines()
    assert len(markdown) == 2 + len(rows)
    assert markdown[-1].startswith("| total | 75.5 | 3,000 | 100 | 400 | 1,000 | 100 | 50 | 17.2 | 4.4 |")


def test_the_script_prices_a_run_folder_end_to_end(bench, tmp_path, monkeypatch, capsys):
    config = load_config("smoke", overrides=[f"out_dir={tmp_path}"])
    elsewhere = {**describe_machine(), "cpu": "another CPU", "kind": "OtherVendor-AVX2"}
    code = {"commit": "0123456789abcdef0123456789abcdef01234567", "modified": False}
    manifest = {"stages": STAGES, "code": code, "machine": elsewhere}
    results = {"config": config.model_dump(), "manifest": manifest}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "pipeline.json"
    argv = ["bench_pipeline.py", "--run", str(tmp_path), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--repeats", "1", "--sampling-batches", "1,2"])
    bench.main()
    written = json.loads(out.read_text())
    sampling = written["prices"]["sampling"]
    assert written["model"] == config.model.name
    assert set(sampling["seconds_per_token_by_batch"]) == {"1", "2", str(config.generation.batch_size)}
    assert sampling["seconds_per_token"] == min(sampling["seconds_per_token_by_batch"].values())
    assert all(written["prices"][kind]["seconds_per_token"] > 0 for kind in ("forward", "forward_backward"))
    assert all(price > 0 for price in written["prices"]["bfloat16"].values())
    assert [row["stage"] for row in written["stages"]] == [*STAGES, "total"]
    slow = next(row for row in written["stages"] if row["stage"] == "slow")
    assert slow["ratio"] == pytest.approx(10.0 / (1000 * written["prices"]["forward"]["seconds_per_token"]))
    printed = capsys.readouterr().out
    assert "| slow | 10.0 | 1,000 |" in printed
    # the run's code and machine come along, and prices from another machine are called out
    assert written["run_code"] == code and written["run_machine"] == elsewhere
    assert written["priced_on"] == describe_machine() and written["priced_at"].startswith("20")
    assert "warning: the run ran on another CPU (OtherVendor-AVX2)" in printed


def test_a_run_without_bfloat16_tokens_is_priced_without_bfloat16(bench, tmp_path, monkeypatch, capsys):
    """On a CPU without native bfloat16 the run counts no bfloat16 tokens: their prices (emulated products,
    minutes to measure) are not measured, and every floor is still priced from the kinds it counted."""
    float32_only = {name: entry for name, entry in STAGES.items() if name not in ("halved", "tuned-in-bf16")}
    config = load_config("smoke", overrides=[f"out_dir={tmp_path}"])
    results = {"config": config.model_dump(), "manifest": {"stages": float32_only}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "pipeline.json"
    argv = ["bench_pipeline.py", "--run", str(tmp_path), "--out", str(out), "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--sampling-batches", "1"])
    asked = []
    measure = bench.measure_prices
    monkeypatch.setattr(bench, "measure_prices", lambda *a, **k: asked.append(k) or measure(*a, **k))
    bench.main()
    written = json.loads(out.read_text())
    assert asked == [{"bfloat16": False}] and written["prices"]["bfloat16"] is None
    rows = {row["stage"]: row for row in written["stages"]}
    assert rows["slow"]["floor_s"] == pytest.approx(1000 * written["prices"]["forward"]["seconds_per_token"])
    assert rows["total"]["floor_s"] > 0
    printed = capsys.readouterr().out
    assert "no bfloat16 prices" in printed
    assert written["run_code"] is None and "warning" not in printed  # a run from before they were recorded
    rows = {
        row["stage"]: row for row in bench.pipeline_table(float32_only, {**PRICE, "sampled_bfloat16": None})
    }
    assert rows["sampler"]["floor_s"] == pytest.approx(9.0)
