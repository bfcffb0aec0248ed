"""The irmscope pipeline: the registered stages, run in order, cached and resumable.

    planted-lexicon → prompts → tune → evaluate → divergence → sites → activations → saes → elicit
    → interpret → validate → probes → steer → attribute → leaderboard → results.json + report

Each stage is one module under :mod:`irmscope.pipeline.stages`, registered in
:data:`irmscope.pipeline.registry.STAGES`; ``docs/extending.md`` shows how to add one. Every stage goes
through :func:`irmscope.stages.run_stage`, so a killed run resumes at the stage it was in, and changing one
setting recomputes only the stages that depend on it. With ``model.tuned`` set, the given model is studied
instead of tuning one; with ``tune.algorithm: none`` only the base model is studied.

While it runs it prints ``stage k/n NAME: cached``, ``running`` (with an estimate of the time the whole run
has left: :mod:`irmscope.pipeline.progress`) and ``done in S s``, and each headline line as soon as the
stage it comes from has finished, with a report of the stages finished so far (:class:`ResultsSoFar`).
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import platform
import shutil
import time
from typing import Any

import irmscope.pipeline.stages  # noqa: F401  (registers the built-in stages)
from irmscope.config import RunConfig
from irmscope.io import write_json
from irmscope.locking import RUN_FOLDER, folder_lock
from irmscope.models.accounting import counted
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.progress import machine_pace, time_left
from irmscope.pipeline.registry import STAGES, Stage, readers_of, register, stage_names
from irmscope.pipeline.stages.tune import tuning_manifest
from irmscope.provenance import code_commit, describe_machine
from irmscope.report.headline import headline
from irmscope.report.run_report import RunGoingOn, write_run_report
from irmscope.stages import PART_SECONDS, run_stage

__all__ = ["STAGES", "RunContext", "Stage", "register", "run_pipeline", "stage_names"]

#: the folder, under the run folder, of the report of the stages finished so far (removed at the end)
PARTIAL_REPORT_DIR = "partial"

#: packages whose versions every results.json records
PACKAGES = ("irmscope", "torch", "transformers", "trl", "peft", "safetensors", "scikit-learn", "scipy",
            "numpy", "spacy", "vaderSentiment", "datasets", "matplotlib")  # fmt: skip


def run_pipeline(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every stage for ``config``; returns the content of ``results.json``.

    The run holds an exclusive lock on its folder throughout: a second run pointed at the same folder is
    refused at once with a one-line error naming the process that holds it, instead of racing it.
    """
    with folder_lock(config.out_dir, RUN_FOLDER):
        ctx = RunContext(config, progress)
        timings: dict[str, float] = {}
        computed: list[tuple[str, float, dict[str, Any]]] = []  # the folders this run computed: its pace
        so_far = ResultsSoFar(ctx)  # removes the partial page a stopped run left
        stages = list(STAGES.values())
        for index, stage in enumerate(stages):
            if not stage.applies(ctx):
                continue
            instances = stage.instance_names(ctx)
            for position, (name, model) in enumerate(instances):
                later = [(other, stage.name) for other, _ in instances[position + 1 :]] + [
                    (other, following.name)
                    for following in stages[index + 1 :]
                    for other in following.expected_instances(ctx)
                ]
                pace = machine_pace(config, computed)
                timings[name] = run_one(
                    ctx, stage, name, model, done_before=len(timings), later=later, pace=pace
                )
                if not ctx.finished[name].cached:
                    computed.append((stage.name, timings[name], ctx.finished[name].summary))
                so_far.update(name, timings, pending=[folder for folder, _ in later])
        results = collect_results(ctx, timings)
        results["headline"] = headline(results)
        write_json(ctx.root / "results.json", results)
        write_run_report(ctx.root, results, ctx.samples, tuning_manifest(ctx))
        so_far.remove_page()
        for line in results["headline"]:  # the first thing to read, so the last thing printed
            print(f"[irmscope] {line}", flush=True)
        print(
            f"[irmscope] report: {ctx.root / 'report.html'}  results: {ctx.root / 'results.json'}", flush=True
        )
        return results


def run_one(
    ctx: RunContext,
    stage: Stage,
    name: str,
    model: str | None,
    done_before: int = 0,
    later: list[tuple[str, str]] | None = None,
    pace: float = 1.0,
) -> float:
    """Run (or reuse) one stage instance, record it in ``ctx.finished``, and return its wall time.

    ``done_before`` stage folders of this run came before it, and ``later`` are ``(folder, stage name)`` of
    those expected after it: they make the ``stage k/n`` count and, with the machine's ``pace``
    (:func:`~irmscope.pipeline.progress.machine_pace`), the estimate of the time left.
    """
    later = later or []
    label = f"stage {done_before + 1}/{done_before + 1 + len(later)} {name}"

    def announced(work) -> dict[str, Any]:
        left = time_left(ctx.config, (name, stage.name), later, pace, readers_of(ctx, name, later))
        print(f"[irmscope] {label}: running ({left})", flush=True)
        with counted() as tokens:  # the model tokens the stage processed, for benchmarks/bench_pipeline.py
            summary = stage.compute(ctx, work, model)
        return {**summary, "tokens": tokens.to_dict()}

    start = time.perf_counter()
    settings = {**stage.settings(ctx, model), "stage_version": stage.version}
    result = run_stage(ctx.root, name, settings, stage.upstream(ctx, model), announced)
    seconds = round(time.perf_counter() - start, 2)
    print(f"[irmscope] {label}: {'cached' if result.cached else f'done in {seconds:.1f} s'}", flush=True)
    ctx.finished[name] = result
    for line in stage.announce(ctx):
        print(f"[irmscope] {line}", flush=True)
    return seconds


class ResultsSoFar:
    """The run's first results while it goes on, so a reader need not wait for the last stage.

    After each stage folder, the headline lines (:func:`~irmscope.report.headline.headline`: the tuning
    gain, its warning and, with a lexicon reward, the policy-shift test) that the stages finished so far
    give and that were not printed yet are printed; the run prints the whole headline again at its end.
    When a stage this run computed changed them and folders are still to run, the report of the finished
    stages is written to ``PARTIAL_REPORT_DIR/report.html`` under the run folder, beside (never over) the
    report of an earlier run. The headline changes once or twice in a run with a tuned model (the
    evaluation; the elicitation, with a lexicon reward), so the page costs at most two renderings. A run
    that ends removes the page; one that stops leaves it, and the next run removes it as it starts, so a
    page never outlives its run's successor.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.lines: list[str] = []
        self.remove_page()

    def remove_page(self) -> None:
        shutil.rmtree(self.ctx.root / PARTIAL_REPORT_DIR, ignore_errors=True)

    def update(self, folder: str, timings: dict[str, float], pending: list[str]) -> None:
        """Print the new headline lines after stage ``folder`` and, where it computed them, write the
        partial report naming the ``pending`` folders (``timings``: the manifest's seconds so far)."""
        if "evaluate" not in self.ctx.finished:  # no headline before the evaluation
            return
        results = collect_results(self.ctx, timings, finished_only=True)
        lines = headline(results)
        if lines == self.lines:
            return
        for line in lines:
            if line not in self.lines:
                print(f"[irmscope] {line}", flush=True)
        self.lines = lines
        if pending and not self.ctx.finished[folder].cached:
            results["headline"] = lines
            try:
                page = write_run_report(
                    self.ctx.root / PARTIAL_REPORT_DIR, results, self.ctx.samples, tuning_manifest(self.ctx),
                    RunGoingOn(after=folder, pending=pending),
                )  # fmt: skip
            except OSError as err:  # a full disk, a read-only folder: the page is a courtesy, the run is not
                print(
                    f"[irmscope] warning: the results so far could not be written ({err}); the run goes on",
                    flush=True,
                )
                return
            print(f"[irmscope] the results so far ({len(pending)} stage folders to go): {page}", flush=True)


def collect_results(
    ctx: RunContext, timings: dict[str, float], finished_only: bool = False
) -> dict[str, Any]:
    """``results.json``: the config, the subject, each stage's sections, and the run's manifest. With
    ``finished_only`` (a run still going) a stage that has not finished every folder the run expects of
    it gives no section."""
    results: dict[str, Any] = {
        "config": ctx.config.model_dump(),
        "subject": {
            "base": ctx.config.model.name,
            "tuned": ctx.tuned_spec,
            "reward": ctx.reward.name,
            "reward_description": ctx.reward.description,
        },
    }
    for stage in STAGES.values():
        if finished_only and not all(name in ctx.finished for name in stage.expected_instances(ctx)):
            continue
        results.update(stage.result(ctx))
    results["manifest"] = {
        "versions": package_versions(),
        # the code that wrote this file and the machine it ran on; stages cached from an earlier run in
        # the folder (``cached`` below) may have been computed by other code on another machine
        "code": code_commit(),
        "machine": describe_machine(),
        "seed": ctx.seed,
        "stages": {
            name: {
                "key": s.key,
                "seconds": s.summary.get("stage_seconds"),
                "cached": s.cached,
                "tokens": s.summary.get("tokens"),
                "parts": s.summary.get(PART_SECONDS),
            }
            for name, s in ctx.finished.items()
        },
        "this_run_seconds": timings,
    }
    return results


def package_versions() -> dict[str, str]:
    """Python's version and each of :data:`PACKAGES`' (a fresh dict, safe to change)."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    """Looked up once per process: the run's manifest is collected after every stage folder
    (:class:`ResultsSoFar`), and each lookup searches the installed distributions."""
    versions = [("python", platform.python_version())]
    for name in PACKAGES:
        try:
            versions.append((name, md.version(name)))
        except md.PackageNotFoundError:
            versions.append((name, "not installed"))
    return tuple(versions)
