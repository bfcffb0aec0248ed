"""The stage runner and folder locks: one writer per stage and per run folder, damaged outputs recomputed."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irmscope.config import load_config
from irmscope.errors import IrmscopeError
from irmscope.locking import LOCK_NAME, folder_lock, output_lock, refuse_if_locked
from irmscope.runs import stage_dir
from irmscope.stages import run_stage, stage_damage


def _write_outputs(work: Path, calls: Path, pause: float = 0.0) -> dict:
    """A stage body that records each call, takes ``pause`` seconds and writes two files."""
    with calls.open("a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(pause)
    (work / "a.txt").write_text("alpha " * 100)
    (work / "sub").mkdir(exist_ok=True)
    (work / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    return {"rows": 2}


def _stage_in_process(root: str, calls: str, pause: float, queue) -> None:
    stage = run_stage(Path(root), "demo", {"x": 1}, [], lambda w: _write_outputs(w, Path(calls), pause))
    queue.put((str(stage.dir), stage.summary["rows"]))


def test_a_finished_stage_is_reused_and_records_its_outputs(tmp_path):
    calls = tmp_path / "calls"
    first = run_stage(tmp_path, "demo", {"x": 1}, [], lambda w: _write_outputs(w, calls))
    again = run_stage(tmp_path, "demo", {"x": 1}, [], lambda w: _write_outputs(w, calls))
    assert not first.cached and again.cached and again.dir == first.dir
    assert len(calls.read_text().split()) == 1
    assert "files" not in again.summary and again.summary["rows"] == 2
    done = json.loads((first.dir / "done.json").read_text())
    assert set(done["files"]) == {"a.txt", "sub/b.bin"}
    assert done["files"]["a.txt"]["bytes"] == 600


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_stage_is_named_and_computed_again(tmp_path, capsys, damage):
    calls = tmp_path / "calls"
    first = run_stage(tmp_path, "demo", {"x": 1}, [], lambda w: _write_outputs(w, calls))
    target = first.dir / "sub" / "b.bin"
    original = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(original[:100])
    elif damage == "flip":  # same size: only the checksum sees it
        target.write_bytes(original[:50] + bytes([original[50] ^ 1]) + original[51:])
    else:
        target.unlink()
    assert "b.bin" in stage_damage(first.dir)
    again = run_stage(tmp_path, "demo", {"x": 1}, [], lambda w: _write_outputs(w, calls))
    printed = capsys.readouterr().out
    assert "stage demo:" in printed and "b.bin" in printed and "computing the stage again" in printed
    assert not again.cached and (again.dir / "sub" / "b.bin").read_bytes() == original
    assert stage_damage(again.dir) is None and len(calls.read_text().split()) == 2
    assert (tmp_path / "stages" / f".demo-{again.key}.damaged").is_dir()  # kept for inspection


def test_two_processes_on_one_stage_compute_it_once(tmp_path):
    """The second process waits for the first one's stage instead of sharing (and publishing) its work."""
    calls = tmp_path / "calls"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_stage_in_process, args=(str(tmp_path), str(calls), 1.5, queue)) for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    results = [queue.get(timeout=5) for _ in procs]
    assert results[0] == results[1]
    assert len(calls.read_text().split()) == 1
    assert stage_damage(Path(results[0][0])) is None


def test_folder_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with folder_lock(tmp_path / "run", "run folder"):
        with pytest.raises(IrmscopeError, match=rf"run folder .* is in use by process {os.getpid()} "):
            with folder_lock(tmp_path / "run", "run folder"):
                pass
    with folder_lock(tmp_path / "run", "run folder"):  # released on exit
        pass


def test_folder_lock_dies_with_a_killed_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from irmscope.locking import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(IrmscopeError, match=f"process {holder.pid} "):
        with folder_lock(tmp_path):
            pass
    holder.kill()
    holder.wait()
    with folder_lock(tmp_path):
        pass


def test_folder_lock_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(IrmscopeError, match="is a file"):
        with folder_lock(tmp_path / "f"):
            pass


def test_a_run_on_a_locked_folder_is_refused_before_any_work(tmp_path):
    from irmscope.pipeline import run_pipeline  # here: the spawned processes above import this module

    config = load_config("smoke", overrides=[f"out_dir={tmp_path}"])
    with folder_lock(tmp_path, "run folder"):
        with pytest.raises(IrmscopeError, match="run folder .* is in use"):
            run_pipeline(config, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing written, and the lock file went with the lock


def test_a_damaged_stage_of_a_finished_run_is_named_to_readers(tmp_path):
    calls = tmp_path / "calls"
    stage = run_stage(tmp_path, "demo", {"x": 1}, [], lambda w: _write_outputs(w, calls))
    results = {"manifest": {"stages": {"demo": {"key": stage.key}}}}
    assert stage_dir(tmp_path, results, "demo") == stage.dir
    (stage.dir / "a.txt").write_text("alpha")
    with pytest.raises(
        IrmscopeError,
        match=r"a\.txt has 5 bytes, not the 600 recorded when it was written; rerun the pipeline",
    ):
        stage_dir(tmp_path, results, "demo")


def test_output_lock_keeps_its_file_beside_the_output(tmp_path):
    with output_lock(tmp_path / "cache", "activation cache"):
        with pytest.raises(IrmscopeError, match=r"activation cache .*cache is in use by process"):
            with output_lock(tmp_path / "cache", "activation cache"):
                pass
    assert not (tmp_path / "cache").exists() and not (tmp_path / ".cache.lock").exists()


def test_the_early_look_at_a_lock_refuses_a_held_folder_or_output_and_creates_nothing(tmp_path):
    """What commands call before their libraries load: the lock's own error while another holder has it,
    nothing (and nothing created) while nobody does, and the lock can be taken right after a look."""
    refuse_if_locked(tmp_path / "missing" / "run", "run folder")
    refuse_if_locked(tmp_path / "missing" / "cache", "activation cache", whole_folder=False)
    assert not (tmp_path / "missing").exists()
    with folder_lock(tmp_path / "run", "run folder"), output_lock(tmp_path / "cache", "activation cache"):
        with pytest.raises(IrmscopeError, match=rf"^run folder .*run is in use by process {os.getpid()} "):
            refuse_if_locked(tmp_path / "run", "run folder")
        with pytest.raises(IrmscopeError, match=r"^activation cache .*cache is in use by process "):
            refuse_if_locked(tmp_path / "cache", "activation cache", whole_folder=False)
        refuse_if_locked(tmp_path / "cache", "activation cache")  # a folder lock of "cache": nobody's
    refuse_if_locked(tmp_path / "run", "run folder")
    with folder_lock(tmp_path / "run", "run folder"), output_lock(tmp_path / "cache", "activation cache"):
        pass
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["run"]


def test_a_look_in_progress_does_not_refuse_the_lock(tmp_path):
    """A look holds a shared lock for an instant; a process taking the lock in that instant retries
    instead of calling the folder in use (here the look is held for 20 ms)."""
    import fcntl
    import threading

    with folder_lock(tmp_path / "run", "run folder"):
        pass  # leaves the folder, without its lock file
    lock_file = tmp_path / "run" / LOCK_NAME
    lock_file.touch()
    look = os.open(lock_file, os.O_RDONLY)
    fcntl.flock(look, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.02, os.close, [look]).start()
    with folder_lock(tmp_path / "run", "run folder"):
        pass


def test_the_early_look_is_left_to_the_lock_under_a_launcher(tmp_path, monkeypatch):
    """Under torchrun (WORLD_SIZE > 1) a rank's look could meet the lock its own job's rank 0 took."""
    from irmscope import cli

    with output_lock(tmp_path / "cache", "activation cache"):
        with pytest.raises(IrmscopeError, match="is in use by process"):
            cli._refuse_if_in_use(tmp_path / "cache", "activation cache", whole_folder=False)
        monkeypatch.setenv("WORLD_SIZE", "2")
        cli._refuse_if_in_use(tmp_path / "cache", "activation cache", whole_folder=False)


def test_a_file_given_as_a_run_folder_is_refused_by_the_look(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(IrmscopeError, match="is a file, not a folder"):
        refuse_if_locked(tmp_path / "f", "run folder")
    refuse_if_locked(tmp_path / "f", "activation cache", whole_folder=False)  # a lock beside it: free


@pytest.mark.parametrize(
    "argv",
    [
        ["cache-activations", "--model", "tiny-gpt_neox", "--n-texts", "2"],
        ["train-sae", "--cache", "no-cache", "--site", "blocks.0.mlp.hook_post"],
        ["audit", "--tuned", "tiny-llama", "--base", "tiny-llama", "--n-prompts", "2"],
    ],
    ids=lambda argv: argv[0],
)
def test_the_lock_a_command_takes_refuses_a_held_output_without_the_early_look(
    tmp_path, monkeypatch, run_cli, argv
):
    """The look before the libraries load is a courtesy; the lock the command takes is the guard. With
    the look turned off, the command still refuses an output another holder writes, in one line."""
    from irmscope import cli

    monkeypatch.setattr(cli, "_refuse_if_in_use", lambda *args, **kwargs: None)
    out = tmp_path / "out"
    with output_lock(out):
        code, _, err = run_cli([*argv, "--out", str(out)])
    assert code == 2, err
    assert err.startswith("error: ") and f"in use by process {os.getpid()} " in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_changed_setting_reaches_every_stage_downstream(tmp_path):
    """A stage's key holds the keys of the stages it reads, so a change two stages up recomputes it."""
    calls = tmp_path / "calls"

    def chain(x: int) -> list:
        first = run_stage(tmp_path, "first", {"x": x}, [], lambda w: _write_outputs(w, calls))
        second = run_stage(tmp_path, "second", {}, [first], lambda w: _write_outputs(w, calls))
        return [first, second, run_stage(tmp_path, "third", {}, [second], lambda w: _write_outputs(w, calls))]

    assert [stage.cached for stage in chain(1)] == [False, False, False]
    assert [stage.cached for stage in chain(1)] == [True, True, True]
    assert [stage.cached for stage in chain(2)] == [False, False, False]
    assert len(calls.read_text().split()) == 6


def test_a_tune_setting_added_later_stays_out_of_the_key_at_its_default():
    """Runs made before tune.scale_rewards and tune.precision existed keep their tune stage's key (and so
    their tuned model); set to anything else, they enter the key."""
    from irmscope.config import TuneSection
    from irmscope.pipeline.stages.tune import tune_fingerprint

    assert "scale_rewards" not in tune_fingerprint(TuneSection())
    assert tune_fingerprint(TuneSection(scale_rewards="none"))["scale_rewards"] == "none"
    assert tune_fingerprint(TuneSection()) == {
        k: v for k, v in TuneSection().model_dump().items() if k not in ("scale_rewards", "precision")
    }
