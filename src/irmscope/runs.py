"""Reading a finished run folder (what ``irmscope run`` wrote) for the commands that build on one:
``irmscope compare`` (leaderboards side by side) and ``irmscope edit`` (a reward edit of its tuned model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def tuned_model_path(run_dir: str | Path, results: dict[str, Any]) -> str:
    """The run's tuned model: the one it was given (``model.tuned``), else its own tune stage's, found
    inside ``run_dir`` so the run folder can be moved or read from anywhere."""
    given = results["config"]["model"]["tuned"]
    if given:
        return given
    if not results["subject"].get("tuned"):
        raise IrmscopeError(
            f"{run_dir} studied the base model only (tune.algorithm=none); it has no tuned model"
        )
    return str(stage_dir(run_dir, results, "tune") / "model")


def run_reward(run_dir: str | Path, results: dict[str, Any]) -> Reward:
    """The known reward the run scored against (a planted lexicon is read from the run's own stage)."""
    spec = results["config"]["reward"]["spec"]
    if spec.strip().lower() == "planted":
        spec = f"lexicon:{stage_dir(run_dir, results, 'planted-lexicon') / 'planted.tsv'}"
    return load_reward(spec)
