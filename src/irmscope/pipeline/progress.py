"""What the runner says while a run goes: ``stage k/n NAME`` and an estimate of the time the run has left.

``n`` counts the stage folders the run will have. Stages that are still to come are forecast from the
config (:meth:`irmscope.pipeline.registry.Stage.expected_instances`), and the count is redone at every stage,
so a wrong forecast corrects itself as the run goes.

The time left is an **estimate**, the sum over the stages still to run of

- the time the stage last took in this run folder (``stage_seconds`` in the ``done.json`` of its most
  recently finished folder, whatever its settings were), or else
- a rough prior: the stage's time in one clean run of the demo preset on the idle 2-core development
  machine, scaled by the config sizes that drive its work (:data:`PRIORS`), and by this machine's *pace*
  once the run has computed enough to measure it (:func:`machine_pace`: the stages it computed so far took
  that many times their priors, as a median over the stages long enough to say so: a short stage's time
  is mostly fixed costs, like the first run's model conversion in the prompts stage). Tuning is the first
  stage long enough to pace the rest, so the forecast is paced from the stage after it, by tuning's pace
  until later stages add theirs. The priors know nothing of the model's size or the CPU: before the pace,
  they overestimate tiny models and underestimate slower CPUs (a CPU without native bfloat16 ran the demo
  in about twice the priors' time, and its tuning in 1.6 times its prior).

A later stage computes when a stage it reads, directly or not, computes in this run (its key holds
theirs: :func:`irmscope.pipeline.registry.readers_of`), or when it has no finished folder in this run
folder. Any other later stage may be reused or not, which is not known before the stages it reads have
finished; when there are such stages the estimate is a range, from "every such stage is reused" to "none
is" (:func:`time_left`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.config import RunConfig
from irmscope.stages import DONE, finished_stage_folders

#: seconds of one stage folder in the demo preset (per model for per-model stages), and the config's size
#: relative to the demo's; a stage named here by its registry name. The seconds are those of the VADER demo
#: timed in one piece on a fresh clone at commit 04d092e (docs/findings.md, "Timings of the two commands")
PRIORS: dict[str, tuple[float, Callable[[RunConfig], float]]] = {
    "planted-lexicon": (2, lambda c: 1.0),
    "prompts": (2, lambda c: 1.0),
    "tune": (
        260,
        lambda c: c.tune.step_cap * c.tune.batch_size * c.tune.max_completion_tokens / (14 * 32 * 32),
    ),
    "evaluate": (39, lambda c: c.data.n_prompts * c.generation.max_new_tokens / (200 * 32)),
    "read-samples": (
        96,
        lambda c: c.data.n_prompts * (c.data.prefix_tokens + c.generation.max_new_tokens) / (200 * 62),
    ),
    "divergence": (1, lambda c: 1.0),
    "sites": (1, lambda c: 1.0),
    "activations": (70, lambda c: c.activations.n_texts * c.activations.max_length / (2000 * 96)),
    "saes": (
        40,
        lambda c: (
            (c.activations.n_texts * c.activations.max_length * c.activations.n_layers * c.sae.epochs)
            / (2000 * 96 * 3 * 2)
        ),
    ),
    "elicit": (
        115,
        lambda c: (c.elicit.n_triples + c.elicit.max_words * c.elicit.n_contexts) / (600 + 600 * 8),
    ),
    "interpret": (70, lambda c: c.activations.n_texts * c.activations.n_layers / (2000 * 3)),
    "validate": (
        248,
        lambda c: c.validation.n_ablation_prompts * c.generation.max_new_tokens / (200 * 32),
    ),
    "probes": (
        146,
        lambda c: (
            (c.probes.n_rating_texts * c.probes.max_length + c.data.n_prompts * 64) / (600 * 128 + 200 * 64)
        ),
    ),
    "steer": (
        116,
        lambda c: (
            c.probes.n_steer_prompts
            * len(c.probes.steer_scales)
            * (1 + c.probes.n_random_directions)
            / (32 * 5 * 3)
        ),
    ),
    "attribute": (40, lambda c: (1 + c.probes.n_patch_pairs) / 25),
    "leaderboard": (109, lambda c: c.data.n_prompts / 200),
    "irl-reward": (9, lambda c: c.data.n_prompts / 200),
    # the audit: by default a crosscoder and a dictionary of differences (60 of its 67 s) on the activations
    # the read-samples stage kept, which also read its word shifts
    "audit": (67, lambda c: c.audit.n_prompts / 200 * (1.0 if c.audit.crosscoder else 0.1)),
}
#: the prior of a stage :data:`PRIORS` does not know (a stage added by a user)
UNKNOWN_STAGE_SECONDS = 30.0
#: prior seconds the run must have computed before its pace replaces 1: the first stages are short and one
#: of them may hold a one-time model conversion, which says nothing of the machine's speed
PACE_AFTER_PRIOR_SECONDS = 120.0
#: stages with a shorter prior set no pace: their time is mostly fixed costs (loading, a first run's 30 s
#: model conversion in the 2 s prompts stage), and right after tuning a median of two stages is their mean
PACE_MIN_PRIOR_SECONDS = 10.0
#: the share of its prior that one computation of a stage did, where that need not be all of it, read from the
#: summary the stage recorded (None: the computation says nothing of the machine's pace). Tuning's prior
#: counts its step cap: a run that stops at its target trains fewer steps, and one that resumed from a
#: checkpoint trained an unknown share in this process
PRIOR_SHARES: dict[str, Callable[[RunConfig, Mapping[str, Any]], float | None]] = {
    "tune": lambda c, summary: (
        None
        if summary.get("resumed_from") or not summary.get("steps_done")
        else summary["steps_done"] / c.tune.step_cap
    ),
}


def recorded_seconds(root: Path, name: str) -> float | None:
    """How long the stage folder ``name`` (e.g. ``saes-tuned``) last took in the run folder ``root``."""
    finished = [folder / DONE for folder in finished_stage_folders(root, name)]
    for done in sorted(finished, key=lambda path: path.stat().st_mtime, reverse=True):
        try:
            seconds = json.loads(done.read_text()).get("stage_seconds")
        except (OSError, ValueError):
            continue
        if isinstance(seconds, (int, float)):
            return float(seconds)
    return None


def prior_seconds(config: RunConfig, stage: str) -> float:
    """The rough prior of one folder of the registered stage ``stage`` under ``config``."""
    if stage not in PRIORS:
        return UNKNOWN_STAGE_SECONDS
    seconds, scale = PRIORS[stage]
    return seconds * scale(config)


def machine_pace(config: RunConfig, computed: Sequence[tuple[str, float, Mapping[str, Any]]]) -> float:
    """How many times its priors this machine takes: the median, over the stage folders this run computed
    (not reused) so far, given as ``(stage name, seconds, the summary it recorded)``, of each one's seconds
    over its prior (times the share of it the computation did, :data:`PRIOR_SHARES`), leaving out the
    stages whose prior, so scaled, is under :data:`PACE_MIN_PRIOR_SECONDS` (a tuning run that stopped at
    its target after a few steps too); 1 until the priors it counts add up to
    :data:`PACE_AFTER_PRIOR_SECONDS`. The median keeps one stage that resumed half-done from setting the
    pace of the rest, once there are three."""
    paced = []
    for stage, seconds, summary in computed:
        share = PRIOR_SHARES[stage](config, summary) if stage in PRIOR_SHARES else 1.0
        prior = (share or 0.0) * prior_seconds(config, stage)
        if prior >= PACE_MIN_PRIOR_SECONDS:
            paced.append((prior, seconds))
    if sum(prior for prior, _ in paced) < PACE_AFTER_PRIOR_SECONDS:
        return 1.0
    return float(np.median([seconds / prior for prior, seconds in paced]))


def seconds_left(config: RunConfig, folders: Sequence[tuple[str, str]], pace: float = 1.0) -> float:
    """The estimated time of the stage folders still to run, each given as ``(folder name, stage name)``:
    the time each last took in this run folder, else its prior times ``pace`` (:func:`machine_pace`)."""
    root = Path(config.out_dir)
    total = 0.0
    for name, stage in folders:
        recorded = recorded_seconds(root, name)
        total += pace * prior_seconds(config, stage) if recorded is None else recorded
    return total


def time_left(
    config: RunConfig,
    running: tuple[str, str],
    later: Sequence[tuple[str, str]],
    pace: float = 1.0,
    readers: Collection[str] = (),
) -> str:
    """What the runner says of the time the run has left, with the stage folder ``running`` (``(folder
    name, stage name)``) computing now and the ``later`` ones to come, of which ``readers`` (folder names)
    read it and so compute too: ``about 34 min left in the run, estimate``, or, when some later folders
    that are not readers have a finished folder in this run folder and so may be reused, ``about 7 min to
    34 min left ...``, the low end counting those as reused."""
    root = Path(config.out_dir)
    seconds = {folder: seconds_left(config, [folder], pace) for folder in [running, *later]}  # read once
    must_compute = [
        folder for folder in later if folder[0] in readers or not finished_stage_folders(root, folder[0])
    ]
    high = duration(sum(seconds.values()))
    low = duration(sum(seconds[folder] for folder in [running, *must_compute]))
    if low == high:
        return f"{high} left in the run, estimate"
    reused = "the low end if later stages are reused"
    return f"{low} to {high.removeprefix('about ')} left in the run, estimate: {reused}"


def duration(seconds: float) -> str:
    """``about 40 s``, ``about 6 min``, ``about 1 h 5 min``: a rough time, said as rough."""
    if seconds < 90:
        return f"about {max(10, round(seconds / 10) * 10)} s" if seconds >= 10 else "a few seconds"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"
