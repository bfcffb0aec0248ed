"""Reading a finished run folder (what ``irmscope run`` wrote) for the commands that build on one:
``irmscope compare`` (leaderboards side by side), ``irmscope edit`` (a reward edit of its tuned model) and
any script: :class:`Run` opens the folder, and each stage is read through its typed artifacts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irmscope.artifacts import PLANTED_LEXICON, RESULT_FILES, TUNED_MODEL, Prompts, Regression, Samples
from irmscope.errors import IrmscopeError
from irmscope.rewards import Reward, load_reward
from irmscope.stages import DONE, stage_damage, stage_folder
from irmscope.validation import read_text_file


def load_run_results(run_dir: str | Path, needs: str | tuple[str, ...] = ()) -> dict[str, Any]:
    """A finished run's ``results.json``; a one-line error when it is missing, unreadable, not a mapping,
    or lacks a section of ``needs`` (e.g. ``"leaderboard"``)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise IrmscopeError(f"{run_dir} holds no results.json; finish the run first (irmscope run ...)")
    try:
        results = json.loads(read_text_file(path, "results file"))
    except json.JSONDecodeError as err:
        raise IrmscopeError(f"{path} is not valid JSON ({err}); rerun the pipeline to rewrite it") from err
    if not isinstance(results, dict):
        raise IrmscopeError(f"{path} is not an irmscope results file; rerun the pipeline to rewrite it")
    for section in (needs,) if isinstance(needs, str) else needs:
        if not results.get(section):
            raise IrmscopeError(
                f"{run_dir} has no {section} in its results.json; rerun the pipeline (with that stage "
                "enabled) to write it"
            )
    return results


def stage_dir(run_dir: str | Path, results: dict[str, Any], stage: str) -> Path:
    """The folder of one of the run's stages (named ``{stage}-{key}`` under ``stages/``)."""
    entry = results["manifest"]["stages"].get(stage)
    folder = stage_folder(run_dir, stage, entry["key"]) if entry else None
    if folder is None or not (folder / DONE).is_file():
        raise IrmscopeError(f"{run_dir} has no finished {stage} stage; run the pipeline again to finish it")
    damage = stage_damage(folder)
    if damage:
        raise IrmscopeError(
            f"{damage}; rerun the pipeline on {run_dir} with its config to recompute the stage"
        )
    return folder


@dataclass(frozen=True)
class FinishedStage:
    """One verified, finished stage of a run, read through its typed artifacts."""

    name: str
    dir: Path

    @property
    def samples(self) -> Samples:
        return Samples.load(self.dir)

    @property
    def prompts(self) -> Prompts:
        return Prompts.load(self.dir)

    def regression(self, label: str) -> Regression:
        return Regression.load(self.dir, label)

    def result(self) -> Any:
        """The stage's section of results.json, from its own JSON file."""
        return json.loads((self.dir / RESULT_FILES[self.name]).read_text())


class Run:
    """A finished run folder: ``Run("runs/demo").stage("evaluate").samples``.

    Every stage is found through the run's manifest and verified (sizes and checksums) before it is read,
    so a moved run folder works and a damaged one is named in one line.
    """

    def __init__(self, folder: str | Path, needs: str | tuple[str, ...] = ("config", "subject", "manifest")):
        self.folder = Path(folder)
        self.results = load_run_results(self.folder, needs=needs)

    @property
    def config(self) -> dict[str, Any]:
        return self.results["config"]

    def stage(self, name: str) -> FinishedStage:
        return FinishedStage(name, stage_dir(self.folder, self.results, name))

    @property
    def tuned_model(self) -> str:
        """The run's tuned model: the one it was given (``model.tuned``), else its own tune stage's, found
        inside the run folder so the folder can be moved or read from anywhere."""
        given = self.config["model"]["tuned"]
        if given:
            return given
        if not self.results["subject"].get("tuned"):
            raise IrmscopeError(
                f"{self.folder} studied the base model only (tune.algorithm=none); it has no tuned model"
            )
        return str(self.stage("tune").dir / TUNED_MODEL)

    @property
    def reward_spec(self) -> str:
        """The run's reward as a spec any command can read (a planted lexicon from the run's own stage)."""
        spec = self.config["reward"]["spec"]
        if spec.strip().lower() == "planted":
            return f"lexicon:{self.stage('planted-lexicon').dir / PLANTED_LEXICON}"
        return spec

    @property
    def reward(self) -> Reward:
        """The known reward the run scored against."""
        return load_reward(self.reward_spec)
