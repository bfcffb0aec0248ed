"""Nothing a user types gives a traceback or a silently wrong result (issue 22).

A table of bad inputs drives every command in-process (``irmscope.cli.main`` with its own argv): each must
exit with status 2, print exactly one line on stderr, starting ``error:``, and leave every file in the
working folder, including earlier outputs, byte for byte and mode for mode as it was. Each is rejected
before any model loads, so the table runs in seconds. A few real subprocesses check the same end to end.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from irmscope import cli

SITE = "blocks.0.mlp.hook_post"
GOOD_LEXICON = "zorp\t2\nblarg\t-1\n"


def _make_world(root: Path) -> None:
    """Inputs and earlier outputs that a bad command must leave alone."""
    (root / "lex.tsv").write_text(GOOD_LEXICON)
    (root / "prev.tsv").write_text("# an earlier lexicon\nzorp\t2\n")
    (root / "prev.tsv").chmod(0o640)
    (root / "prev.json").write_text('{"earlier": true}\n')
    (root / "prev.png").write_bytes(b"\x89PNG earlier")
    (root / "prevdir").mkdir()
    (root / "prevdir" / "keep.txt").write_text("earlier result\n")
    (root / "file.txt").write_text("not a folder\n")
    (root / "binary.bin").write_bytes(b"\xff\xfe\x00\x81binary")
    (root / "multi.tsv").write_text("good\t1\nvery good\t2\n")
    (root / "nan.tsv").write_text("zorp\tnan\n")
    (root / "empty.txt").write_text("\n  \n")
    (root / "bad.json").write_text("{not json")
    (root / "list.json").write_text("[1, 2]")
    (root / "typo.yaml").write_text("data:\n  n_promts: 3\n")
    (root / "cache").mkdir()  # an activation cache that holds one site and no rows
    manifest = {"sites": [SITE], "widths": {SITE: 8}, "shards": [], "complete": True, "model": "tiny"}
    (root / "cache" / "manifest.json").write_text(json.dumps(manifest))
    (root / "run_noconfig").mkdir()
    (root / "run_noconfig" / "results.json").write_text('{"leaderboard": {"rows": []}}')
    (root / "run_badjson").mkdir()
    (root / "run_badjson" / "results.json").write_text("{truncated")
    (root / "run_list").mkdir()
    (root / "run_list" / "results.json").write_text("[]")
    tune_out = root / "tuned" / "model"  # a finished tuning of other settings
    tune_out.mkdir(parents=True)
    (tune_out / "irmscope_manifest.json").write_text(
        json.dumps({"base_model": "tiny-llama", "seed": 5, "hyperparameters": {}, "reward": {"spec": "x"}})
    )


def _snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under ``root`` with its bytes (None for a folder) and permission bits."""
    out = {}
    for path in sorted(root.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        out[str(path.relative_to(root))] = (None if path.is_dir() else path.read_bytes(), mode)
    return out


# (id, argv, a fragment the error line must contain). Relative paths are inside the test's folder.
CASES: list[tuple[str, list[str], str]] = [
    # command-line usage errors (typer's own click)
    ("unknown-command", ["nosuch"], "No such command"),
    ("unknown-option", ["run", "--nosuch"], "No such option: --nosuch"),
    ("unknown-option-reward", ["reward", "--nosuch", "x"], "see irmscope reward --help"),
    ("missing-option-value", ["planted-lexicon", "--out"], "requires an argument"),
    ("missing-required-option", ["planted-lexicon"], "--out"),
    ("missing-argument-compare", ["compare", "--out", "cmp"], "Missing"),
    ("int-not-a-number", ["planted-lexicon", "--n-words", "abc", "--out", "x.tsv"], "--n-words"),
    ("float-not-a-number", ["edit", "run_noconfig", "--gain", "lots"], "--gain"),
    ("extra-argument", ["models", "extra"], "unexpected extra argument"),
    ("config-unknown-subcommand", ["config", "hide"], "No such command"),
    # reward
    ("reward-no-texts", ["reward"], "no texts to score"),
    ("reward-unknown-spec", ["reward", "-r", "sentiment", "x"], "unknown reward spec"),
    ("reward-empty-spec", ["reward", "-r", "", "x"], "--reward is empty"),
    ("reward-missing-lexicon", ["reward", "-r", "lexicon:nosuch.tsv", "x"], "does not exist"),
    ("reward-lexicon-is-folder", ["reward", "-r", "lexicon:prevdir", "x"], "is a folder"),
    ("reward-lexicon-binary", ["reward", "-r", "lexicon:binary.bin", "x"], "not UTF-8"),
    ("reward-lexicon-multiword", ["reward", "-r", "lexicon:multi.tsv", "x"], "multi.tsv line 2"),
    ("reward-lexicon-nan", ["reward", "-r", "lexicon:nan.tsv", "x"], "not a finite number"),
    ("reward-missing-classifier", ["reward", "-r", "classifier:nosuch", "x"], "nosuch"),
    ("reward-file-missing", ["reward", "--file", "nosuch.txt"], "does not exist"),
    ("reward-file-folder", ["reward", "--file", "prevdir"], "is a folder"),
    ("reward-file-binary", ["reward", "--file", "binary.bin"], "not UTF-8"),
    ("reward-file-blank", ["reward", "--file", "empty.txt"], "no texts to score"),
    ("reward-not-utf8-argument", ["reward", "caf\udce9"], "not UTF-8"),
    # train-classifier
    ("classifier-out-is-file", ["train-classifier", "--out", "file.txt"], "is a file"),
    ("classifier-out-exists", ["train-classifier", "--out", "prevdir"], "--overwrite"),
    ("classifier-limit-zero", ["train-classifier", "--limit", "0", "--out", "c"], "--limit"),
    ("classifier-empty-data", ["train-classifier", "--data", "", "--out", "c"], "--data is empty"),
    # planted-lexicon
    ("planted-out-exists", ["planted-lexicon", "--out", "prev.tsv"], "--overwrite"),
    ("planted-out-is-folder", ["planted-lexicon", "--out", "prevdir"], "is a folder"),
    ("planted-out-under-file", ["planted-lexicon", "--out", "file.txt/x.tsv"], "is a file"),
    ("planted-seed-negative", ["planted-lexicon", "--out", "x.tsv", "--seed", "-1"], "--seed"),
    ("planted-n-words-zero", ["planted-lexicon", "--out", "x.tsv", "--n-words", "0"], "--n-words"),
    ("planted-n-texts-negative", ["planted-lexicon", "--out", "x.tsv", "--n-texts", "-5"], "--n-texts"),
    ("planted-empty-model", ["planted-lexicon", "--out", "x.tsv", "--model", " "], "--model is empty"),
    # cache-activations
    ("cache-max-length-zero", ["cache-activations", "--out", "c", "--max-length", "0"], "--max-length"),
    ("cache-batch-size-zero", ["cache-activations", "--out", "c", "--batch-size", "0"], "--batch-size"),
    ("cache-n-texts-zero", ["cache-activations", "--out", "c", "--n-texts", "0"], "--n-texts"),
    ("cache-positions", ["cache-activations", "--out", "c", "--positions", "first"], "'all' or 'last'"),
    ("cache-out-is-file", ["cache-activations", "--out", "file.txt"], "is a file"),
    ("cache-out-holds-other", ["cache-activations", "--out", "prevdir"], "holds no activation cache"),
    ("cache-empty-split", ["cache-activations", "--out", "c", "--split", ""], "--split is empty"),
    # train-sae
    ("sae-missing-site", ["train-sae", "--cache", "cache", "--site", "blocks.9.x", "--out", "s"], "not in"),
    (
        "sae-no-cache",
        ["train-sae", "--cache", "prevdir", "--site", SITE, "--out", "s"],
        "no activation cache",
    ),
    ("sae-out-exists", ["train-sae", "--cache", "cache", "--site", SITE, "--out", "prevdir"], "--overwrite"),
    ("sae-out-is-file", ["train-sae", "--cache", "cache", "--site", SITE, "--out", "file.txt"], "is a file"),
    ("sae-lr-nan", ["train-sae", "--cache", "cache", "--site", SITE, "--out", "s", "--lr", "nan"], "--lr"),
    ("sae-lr-zero", ["train-sae", "--cache", "cache", "--site", SITE, "--out", "s", "--lr", "0"], "--lr"),
    (
        "sae-l1-inf",
        ["train-sae", "--cache", "cache", "--site", SITE, "--out", "s", "--l1-coefficient", "inf"],
        "finite",
    ),
    ("sae-k-zero", ["train-sae", "--cache", "cache", "--site", SITE, "--out", "s", "--k", "0"], "--k"),
    (
        "sae-architecture",
        ["train-sae", "--cache", "cache", "--site", SITE, "--out", "s", "--architecture", "gated"],
        "sae.architecture",
    ),
    (
        "sae-aux-negative",
        ["train-sae", "--cache", "cache", "--site", SITE, "--out", "s", "--aux-k-coefficient", "-1"],
        "--aux-k",
    ),
    # tune
    ("tune-set-typo", ["tune", "--out", "t", "--set", "stepz=3"], "unknown config key 'tune.stepz'"),
    ("tune-set-no-equals", ["tune", "--out", "t", "--set", "steps"], "has no '='"),
    ("tune-beta-infinity", ["tune", "--out", "t", "--set", "beta=Infinity"], "finite"),
    ("tune-steps-true", ["tune", "--out", "t", "--set", "steps=true"], "not true"),
    ("tune-algorithm", ["tune", "--out", "t", "--algorithm", "ppo"], "tune.algorithm"),
    ("tune-seed-negative", ["tune", "--out", "t", "--seed", "-3"], "--seed"),
    ("tune-out-is-file", ["tune", "--out", "file.txt"], "is a file"),
    ("tune-out-holds-other", ["tune", "--out", "prevdir"], "holds other files"),
    (
        "tune-different-finished",
        ["tune", "--out", "tuned", "--model", "tiny-llama"],
        "tuned with other settings",
    ),
    ("tune-unknown-reward", ["tune", "--out", "t", "-r", "lexicon:nosuch.tsv"], "does not exist"),
    # evaluate
    ("evaluate-missing-tuned", ["evaluate"], "--tuned"),
    ("evaluate-n-zero", ["evaluate", "--tuned", "t", "--n", "0"], "--n"),
    ("evaluate-out-exists", ["evaluate", "--tuned", "tiny-llama", "--out", "prev.json"], "--overwrite"),
    ("evaluate-out-folder", ["evaluate", "--tuned", "tiny-llama", "--out", "prevdir"], "is a folder"),
    ("evaluate-bad-reward", ["evaluate", "--tuned", "tiny-llama", "-r", "vader:x"], "unknown reward spec"),
    ("evaluate-empty-tuned", ["evaluate", "--tuned", ""], "--tuned is empty"),
    # divergence
    ("divergence-top-zero", ["divergence", "--tuned", "t", "--top", "0"], "--top"),
    ("divergence-plot-exists", ["divergence", "--tuned", "t", "--plot", "prev.png"], "--overwrite"),
    ("divergence-plot-folder", ["divergence", "--tuned", "t", "--plot", "prevdir"], "is a folder"),
    # run and config show
    ("run-seed-negative", ["run", "--set", "seed=-1"], "config value 'seed'"),
    ("run-out-dir-empty", ["run", "--set", "out_dir="], "config value 'out_dir'"),
    ("run-n-prompts-true", ["run", "--set", "data.n_prompts=true"], "data.n_prompts"),
    ("run-threshold-nan", ["run", "--set", "validation.threshold=NaN"], "finite"),
    ("run-unknown-preset", ["run", "--preset", "fast"], "unknown preset"),
    ("run-unknown-key", ["run", "--set", "data.n_promts=3"], "unknown config key"),
    ("run-not-a-section", ["run", "--set", "out_dir.x=1"], "not a section"),
    ("run-seed-a-mapping", ["run", "--set", "seed.x=1"], "config value 'seed'"),
    ("run-layers-negative", ["run", "--set", "activations.layers=[-1]"], "activations.layers"),
    ("run-lora-number", ["run", "--set", "tune.lora=1"], "tune.lora"),
    ("run-config-missing", ["run", "--config", "nosuch.yaml"], "does not exist"),
    ("run-config-binary", ["run", "--config", "binary.bin"], "not UTF-8"),
    ("run-config-folder", ["run", "--config", "prevdir"], "is a folder"),
    ("run-config-bad-json", ["run", "--config", "bad.json"], "could not be parsed"),
    ("run-config-list", ["run", "--config", "list.json"], "mapping"),
    ("config-show-typo-file", ["config", "show", "--config", "typo.yaml"], "unknown config key"),
    ("config-show-scales-inf", ["config", "show", "-s", "probes.steer_scales=[1,Infinity]"], "finite"),
    # compare
    ("compare-no-results", ["compare", "prevdir", "--out", "cmp"], "holds no results.json"),
    ("compare-out-is-file", ["compare", "run_noconfig", "--out", "file.txt"], "is a file"),
    ("compare-out-exists", ["compare", "run_noconfig", "--out", "prevdir"], "--overwrite"),
    ("compare-bad-json", ["compare", "run_badjson", "--out", "cmp"], "not valid JSON"),
    ("compare-not-a-mapping", ["compare", "run_list", "--out", "cmp"], "not an irmscope results file"),
    # edit
    ("edit-no-config", ["edit", "run_noconfig"], "rerun the pipeline"),
    ("edit-gain-nan", ["edit", "run_noconfig", "--gain", "nan"], "--gain"),
    ("edit-gain-negative", ["edit", "run_noconfig", "--gain", "-1"], "--gain"),
    ("edit-layer-negative", ["edit", "run_noconfig", "--layer", "-2"], "--layer"),
    ("edit-out-exists", ["edit", "run_noconfig", "--out", "prevdir"], "--overwrite"),
    ("edit-word-empty", ["edit", "run_noconfig", "--word", ""], "--word"),
    ("edit-missing-run", ["edit", "nosuch"], "holds no results.json"),
]


@pytest.fixture
def world(tmp_path, monkeypatch):
    _make_world(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("IRMSCOPE_CACHE", str(tmp_path / ".cache"))  # train-classifier's default folder
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return tmp_path


def _assert_one_error_line(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], err


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)
    commands = {argv[0] for _, argv, _ in CASES}
    for command in ("models", "reward", "train-classifier", "planted-lexicon", "cache-activations"):
        assert command in commands
    for command in ("train-sae", "tune", "evaluate", "divergence", "run", "compare", "edit", "config"):
        assert command in commands


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(world, monkeypatch, argv, fragment, run_cli):
    import irmscope.models
    import irmscope.models.loading

    def no_model(*args, **kwargs):
        raise AssertionError("a bad input must be rejected before any model is loaded")

    for module in (irmscope.models, irmscope.models.loading):
        for name in ("load_model", "load_tokenizer"):
            monkeypatch.setattr(module, name, no_model)
    before = _snapshot(world)
    code, _, err = run_cli(argv)
    _assert_one_error_line(code, err, fragment)
    assert _snapshot(world) == before


def test_world_size_that_is_not_a_number(world, monkeypatch, run_cli):
    monkeypatch.setenv("WORLD_SIZE", "abc")
    code, _, err = run_cli(["models"])
    _assert_one_error_line(code, err, "WORLD_SIZE")


def test_no_arguments_prints_the_help(world, run_cli):
    code, out, err = run_cli([])
    assert code == 0 and "reward" in out and "planted-lexicon" in out and not err


# ------------------------------------------------------------------------------------------- positive


def test_a_byte_order_mark_does_not_hide_the_first_word(world, run_cli):
    (world / "bom.tsv").write_bytes(b"\xef\xbb\xbfzorp\t2\n")
    code, out, err = run_cli(["reward", "-r", "lexicon:bom.tsv", "zorp"])
    assert code == 0, err
    assert out.strip() == "0.4000"  # 2 / 5, Eq. 3's scale


def test_reward_reads_a_file_and_standard_input(world, monkeypatch, run_cli):
    import io

    (world / "texts.txt").write_bytes(b"\xef\xbb\xbfzorp zorp\n\nblarg\n")
    code, out, err = run_cli(["reward", "-r", "lexicon:lex.tsv", "--file", "texts.txt"])
    assert code == 0, err
    assert out.splitlines() == ["0.8000\tzorp zorp", "-0.2000\tblarg"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("zorp\nblarg zorp\n"))
    code, out, err = run_cli(["reward", "-r", "lexicon:lex.tsv", "-"])
    assert code == 0, err
    assert out.splitlines() == ["0.4000\tzorp", "0.2000\tblarg zorp"]


def test_overwrite_replaces_an_output_with_normal_permissions(world, run_cli):
    """--overwrite lets an existing output be replaced; the new file gets 0o666 less the umask."""
    from irmscope.rewards.lexicon import Lexicon

    target = world / "prev.tsv"
    code, _, err = run_cli(["planted-lexicon", "--out", "prev.tsv"])
    assert code == 2 and "--overwrite" in err
    # the planting itself needs a tokenizer; what --overwrite changes is the output check, and the writer
    # (atomic_write) then replaces the file in place
    from irmscope.validation import check_output

    assert check_output(target, overwrite=True) == target
    Lexicon({"zorp": 1.0}).to_tsv(target)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert Lexicon.from_tsv(target)["zorp"] == 1.0


def test_compare_overwrite_writes_into_an_existing_folder(world, run_cli):
    """The flag reaches the command: with --overwrite, compare gets past the output check to its input."""
    code, _, err = run_cli(["compare", "run_list", "--out", "prevdir", "--overwrite"])
    _assert_one_error_line(code, err, "not an irmscope results file")


def test_tune_resumes_its_own_finished_model(world):
    """The same settings are not refused: tune_model hands back the finished model (resume semantics)."""
    from irmscope.config import load_config
    from irmscope.errors import IrmscopeError
    from irmscope.tune.trainer import resolved_settings, stale_tune_output

    settings = load_config("demo").tune
    manifest = {
        "base_model": "tiny-llama",
        "seed": 0,
        "hyperparameters": resolved_settings(settings).model_dump(),  # as tune_model records them
        "reward": {"spec": "vader"},
    }
    (world / "tuned" / "model" / "irmscope_manifest.json").write_text(json.dumps(manifest))
    assert stale_tune_output(world / "tuned", "tiny-llama", settings, 0, "vader") == []
    assert stale_tune_output(world / "tuned", "tiny-llama", settings, 1, "vader", overwrite=True) == [
        world / "tuned" / "model"
    ]
    # a model tuned before tune.scale_rewards existed is the same tuning at its default, not another one
    manifest["hyperparameters"].pop("scale_rewards")
    (world / "tuned" / "model" / "irmscope_manifest.json").write_text(json.dumps(manifest))
    assert stale_tune_output(world / "tuned", "tiny-llama", settings, 0, "vader") == []
    unscaled = settings.model_copy(update={"scale_rewards": "none"})
    with pytest.raises(IrmscopeError, match="tuned with other settings"):
        stale_tune_output(world / "tuned", "tiny-llama", unscaled, 0, "vader")


def test_nan_activations_are_a_data_problem(tmp_path):
    import torch

    from irmscope.activations.store import ActivationStore, save_manifest, shard_name, write_shard
    from irmscope.sae.train import TrainConfig, train_sae

    x = torch.randn(64, 8)
    x[3, 2] = float("nan")
    meta = {"token_ids": torch.zeros(64, dtype=torch.long), "text_index": torch.zeros(64, dtype=torch.long)}
    write_shard(tmp_path / shard_name(0), {SITE: x, **meta, "position": torch.arange(64)})
    manifest = {"sites": [SITE], "widths": {SITE: 8}, "complete": True, "model": "tiny"}
    save_manifest(tmp_path, {**manifest, "shards": [{"index": 0, "rows": 64, "file": shard_name(0)}]})
    config = TrainConfig(d_sae=16, architecture="relu", epochs=1, batch_size=16, b_dec_init="zeros")
    with pytest.raises(Exception, match=f"{SITE}.*NaN or infinite.*recache") as info:
        train_sae(ActivationStore(tmp_path), SITE, config, progress=False)
    assert "learning rate" not in str(info.value)


# ------------------------------------------------------------------------------------ real processes


def _subprocess(args: list[str | bytes], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    src = str(Path(cli.__file__).resolve().parents[1])
    environment["PYTHONPATH"] = os.pathsep.join([src, environment.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "irmscope.cli", *args],
        capture_output=True,
        cwd=cwd,
        env=environment,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args, fragment, env",
    [
        (["run", "--nosuch"], "No such option: --nosuch", {}),
        (["reward"], "no texts to score", {}),
        (["planted-lexicon", "--n-words", "abc", "--out", "x.tsv"], "--n-words", {}),
        ([b"reward", b"\xff"], "not UTF-8", {}),
        (["models"], "WORLD_SIZE", {"WORLD_SIZE": "abc"}),
    ],
    ids=["unknown-option", "missing-argument", "typed-option", "bytes-argument", "world-size"],
)
def test_a_real_process_prints_one_line(world, args, fragment, env):
    before = _snapshot(world)
    result = _subprocess(args, world, **env)
    err = result.stderr.decode("utf-8", "replace")
    _assert_one_error_line(result.returncode, err, fragment)
    assert _snapshot(world) == before


def test_a_real_process_scores_a_bom_lexicon_from_stdin(world):
    (world / "bom.tsv").write_bytes(b"\xef\xbb\xbfzorp\t2\n")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    environment["PYTHONPATH"] = str(Path(cli.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-m", "irmscope.cli", "reward", "-r", "lexicon:bom.tsv", "--file", "-"],
        input=b"zorp\n",
        capture_output=True,
        cwd=world,
        env=environment,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.decode().split("\t")[0].strip() == "0.4000", result.stderr
