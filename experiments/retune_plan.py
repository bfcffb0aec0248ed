"""What a round trip (experiments/retune_export.sh) needs from a tuned subject's folder, printed as shell
assignments for the script to ``eval``:

    .venv/bin/python experiments/retune_plan.py DIR

Two layouts of DIR:

* a planted replicate (experiments/planted_replicates.sh): DIR/tuned/model, DIR/lexicon.tsv, the audit in
  DIR/audit, and, after experiments/planted_pipeline.sh, the whole pipeline's run in DIR/pipeline;
* a pipeline run folder (``irmscope run``, DIR/results.json), such as the VADER run of
  experiments/vader_pipeline.sh: its tuned model, reward, data, seed and evaluation come from its config,
  and both exports from its own audit and irl-reward stages.

The retune repeats the original tune's recipe (learning rate and KL coefficient, read from the tuned model's
manifest) for as many steps as it took, and its evaluation repeats the original evaluation's prompts, seed
and sampling batch, so that both sample the same base completions and their gains pair per prompt.

A missing piece (no tuned model, no audit, no irl-reward stage) is not an error here: its variable is empty,
and the script names what to run when that export is asked for.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from irmscope.artifacts import PLANTED_LEXICON
from irmscope.errors import IrmscopeError
from irmscope.runs import Run

MANIFEST = "irmscope_manifest.json"


def _stage_dir(run: Run, name: str) -> str:
    """The run's current folder of stage ``name``, or "" when the stage has not finished."""
    try:
        return str(run.stage(name).dir)
    except IrmscopeError:
        return ""


def _recipe(model_dir: Path) -> dict[str, Any]:
    manifest = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
    settings = manifest["hyperparameters"]
    return {
        "STEPS": manifest["steps_done"],
        "LEARNING_RATE": settings["learning_rate"],
        "BETA": settings["beta"],
        "TUNE_SEED": manifest["seed"],
        "SEED": manifest["seed"],
    }


def _reward_spec(run: Run) -> str:
    """The run's reward as a spec another command can read (a planted lexicon from the run's stage)."""
    spec = run.config["reward"]["spec"]
    if spec.strip().lower() == "planted":
        return f"lexicon:{run.stage('planted-lexicon').dir / PLANTED_LEXICON}"
    return spec


def plan(folder: Path, data: str) -> dict[str, Any]:
    """The round trip's settings for ``folder`` (see the module docstring); ``data`` is the replicates' data
    source (a run folder names its own)."""
    if (folder / "results.json").is_file():
        run = Run(folder)
        config = run.config
        return {
            **_recipe(Path(run.tuned_model)),
            "SEED": config["seed"],  # the evaluation's: the run's seed, whatever seed the tune had
            "REWARD": _reward_spec(run),
            "DATA": config["data"]["source"],
            "EVAL_N": config["data"]["n_prompts"],
            "EVAL_BATCH": config["generation"]["batch_size"],
            "AUDIT_DIR": _stage_dir(run, "audit"),
            "IRL_DIR": _stage_dir(run, "irl-reward"),
            "AUDIT_HINT": f"irmscope run on {folder} with the audit stage",
            "IRL_HINT": f"irmscope run on {folder} with the probes, leaderboard and irl-reward stages",
        }
    model = folder / "tuned" / "model"
    if not (model / MANIFEST).is_file():
        raise SystemExit(
            f"error: {folder} has neither results.json nor tuned/model; give a run or a replicate"
        )
    seed = _recipe(model)["TUNE_SEED"]
    pipeline = folder / "pipeline"
    irl = _stage_dir(Run(pipeline), "irl-reward") if (pipeline / "results.json").is_file() else ""
    return {
        **_recipe(model),
        "REWARD": f"lexicon:{folder}/lexicon.tsv",
        "DATA": data,
        "EVAL_N": 200,
        "EVAL_BATCH": "",  # replicates: set EVAL_BATCH to their evaluation's batch (docs/replicates.md)
        "AUDIT_DIR": str(folder / "audit") if (folder / "audit" / "elicited.tsv").is_file() else "",
        "IRL_DIR": irl,
        "AUDIT_HINT": f"bash experiments/planted_replicates.sh {seed} (its audit exports the words)",
        "IRL_HINT": f"bash experiments/planted_pipeline.sh {seed} (its irl-reward stage saves the reward)",
    }


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("error: usage: retune_plan.py DIR DATA (see experiments/retune_export.sh)")
    try:
        settings = plan(Path(sys.argv[1]), sys.argv[2])
    except IrmscopeError as err:
        raise SystemExit(f"error: {err}") from None
    for name, value in settings.items():
        print(f"{name}={shlex.quote(str(value))}")


if __name__ == "__main__":
    main()
