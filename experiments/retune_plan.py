"""What a round trip (experiments/retune_export.sh) needs from a tuned subject's folder, printed as shell
assignments for the script to ``eval``:

    .venv/bin/python experiments/retune_plan.py DIR DATA    # DATA: the replicates' data source

Two layouts of DIR:

* a planted replicate (experiments/planted_replicates.sh): DIR/tuned/model, DIR/lexicon.tsv, the audit in
  DIR/audit, and, after experiments/planted_pipeline.sh, the whole pipeline's run in DIR/pipeline;
* a pipeline run folder (``irmscope run``, DIR/results.json), such as the VADER run of
  experiments/vader_pipeline.sh: its tuned model, reward, data, seed and evaluation come from its config,
  and both exports from its own audit and irl-reward stages.

The retune repeats the original tune (base model, algorithm, seed and every tune setting, read from the
tuned model's manifest) for as many steps as it took, and its evaluation repeats the original evaluation's
prompts, seed, prefix and completion lengths and sampling batch, so that both sample the same base
completions and their gains pair per prompt.

A missing piece (no tuned model, no audit, no irl-reward stage) is not an error here: its variable is empty,
and the script names what to run when that export is asked for.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from irmscope.config import load_config
from irmscope.errors import IrmscopeError
from irmscope.runs import Run

MANIFEST = "irmscope_manifest.json"


def _stage_dir(run: Run, name: str) -> str:
    """The run's current folder of stage ``name``, or "" when the stage has not finished."""
    try:
        return str(run.stage(name).dir)
    except IrmscopeError:
        return ""


#: tune settings a retune does not copy: it runs for the original's steps instead of to its target
NOT_COPIED = ("steps", "target_gain", "max_steps", "eval_every", "eval_prompts", "algorithm")


def _recipe(model_dir: Path) -> dict[str, Any]:
    """The original tune's base model, algorithm, steps, seed and every other setting of its tune section
    (``TUNE_ARGS``, a bash array of ``--set`` options), from the tuned model's manifest."""
    manifest = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
    settings = manifest["hyperparameters"]
    copied = [
        f"{key}={json.dumps(value) if not isinstance(value, str) else value}"  # true, not Python's True
        for key, value in settings.items()
        if key not in NOT_COPIED and value is not None
    ]
    load_config("demo", overrides=[f"tune.{setting}" for setting in copied])  # as irmscope tune reads them
    return {
        "BASE_MODEL": manifest["base_model"],
        "ALGORITHM": manifest["algorithm"],
        "STEPS": manifest["steps_done"],
        "TUNE_SEED": manifest["seed"],
        "SEED": manifest["seed"],
        "TUNE_ARGS": [arg for setting in copied for arg in ("--set", setting)],
    }


def _generation(config: dict[str, Any]) -> dict[str, Any]:
    """The run's evaluation settings that ``irmscope evaluate`` takes; a run that sampled at another
    temperature or top-p than evaluate's (1.0) cannot be paired with an evaluation, so it is refused."""
    generation = config["generation"]
    if generation["temperature"] != 1.0 or generation["top_p"] != 1.0:
        raise SystemExit(
            "error: the run sampled with temperature or top_p other than 1.0, which irmscope evaluate cannot "
            "repeat; its evaluation would not pair with a retune's"
        )
    return {
        "EVAL_N": config["data"]["n_prompts"],
        "EVAL_BATCH": generation["batch_size"],
        "COMPLETION_TOKENS": generation["max_new_tokens"],
        "PREFIX_TOKENS": config["data"]["prefix_tokens"],
    }


def plan(folder: Path, data: str) -> dict[str, Any]:
    """The round trip's settings for ``folder`` (see the module docstring); ``data`` is the replicates' data
    source (a run folder names its own)."""
    if (folder / "results.json").is_file():
        run = Run(folder)
        config = run.config
        return {
            **_recipe(Path(run.tuned_model)),
            "SEED": config["seed"],  # the evaluation's: the run's seed, whatever seed the tune had
            "REWARD": run.reward_spec,
            "DATA": config["data"]["source"],
            **_generation(config),
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
    recipe = _recipe(model)
    seed = recipe["TUNE_SEED"]
    pipeline = folder / "pipeline"
    irl = _stage_dir(Run(pipeline), "irl-reward") if (pipeline / "results.json").is_file() else ""
    return {
        **recipe,
        "REWARD": f"lexicon:{folder}/lexicon.tsv",
        "DATA": data,
        # the replicates' evaluation (experiments/planted_replicates.sh): irmscope evaluate's defaults; set
        # EVAL_BATCH to their batch (docs/replicates.md)
        "EVAL_N": 200,
        "EVAL_BATCH": "",
        "COMPLETION_TOKENS": 32,
        "PREFIX_TOKENS": 30,
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
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise SystemExit(
            f"error: {sys.argv[1]}'s tuned model has no readable irmscope manifest ({err!r}); a round trip "
            "needs a model tuned by irmscope tune"
        ) from None
    for name, value in settings.items():
        if isinstance(value, list):  # a bash array
            print(f"{name}=({' '.join(shlex.quote(str(v)) for v in value)})")
        else:
            print(f"{name}={shlex.quote(str(value))}")


if __name__ == "__main__":
    main()
