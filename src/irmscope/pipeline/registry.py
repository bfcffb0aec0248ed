"""The stage registry: what a pipeline stage declares, and the ordered list of registered stages.

A stage is a small class in its own module under :mod:`irmscope.pipeline.stages`, registered with
:func:`register`. It declares

- ``name``, the ``needs`` it reads (names of earlier stages) and a ``version``;
- :meth:`Stage.settings`, the share of the config that, with the keys of the stages it reads and its
  version, forms its cache key (``config_sections`` declares the common case: whole config sections and
  the seed);
- :meth:`Stage.applies`, when it runs at all (``requires`` declares the common case: a tuned model, a
  lexicon reward, the probes switched on);
- :meth:`Stage.compute`, which writes its files into a work folder and returns a JSON-able summary;
- :meth:`Stage.result`, its sections of ``results.json``.

Bumping ``version`` recomputes the stage (and everything that reads it) in existing run folders: that is
the one way to say "this stage now computes something else". The runner
(:func:`irmscope.pipeline.run_pipeline`) walks the registry in order; the results file, the documented
stage list and the tests' stage list all come from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from irmscope.artifacts import RESULT_FILES
from irmscope.models.precision import resolve_precision
from irmscope.stages import StageResult

if TYPE_CHECKING:
    from irmscope.pipeline.context import RunContext


#: the conditions a stage may require of a run (``Stage.requires``), checked in the order listed there
REQUIREMENTS: dict[str, Callable[[RunContext], bool]] = {
    "tuned": lambda ctx: ctx.tuned_spec is not None,  # a tuned model to compare with the base model
    "lexicon": lambda ctx: ctx.lexicon is not None,  # a reward with a known lexicon to score against
    "probes": lambda ctx: ctx.config.probes.enabled,  # the probe family switched on
}

#: each requirement as it will be once the stages before it have run, judged from the config alone (for
#: the runner's ``stage k/n`` count, printed before, e.g., the tune stage has made the tuned model)
FORECASTS: dict[str, Callable[[RunContext], bool]] = {
    "tuned": lambda ctx: ctx.config.model.tuned is not None or ctx.tunes_a_model,
    # a planted reward is a lexicon, made by its stage; any other reward can be loaded now
    "lexicon": lambda ctx: ctx.config.reward.spec.strip().lower() == "planted" or ctx.lexicon is not None,
    "probes": REQUIREMENTS["probes"],
}


def section_values(section: BaseModel, **dump: Any) -> dict[str, Any]:
    """A config section's values (``dump``: ``model_dump``'s options) as part of a stage's settings, with a
    ``precision`` of ``auto`` resolved for this machine (the pipeline's models run on the CPU): the same
    folder reused on a machine where ``auto`` means another precision computes the stage again."""
    values = section.model_dump(**dump)
    if "precision" in values:
        values["precision"] = resolve_precision(values["precision"])
    return values


def section_settings(ctx: RunContext, *sections: str) -> dict[str, Any]:
    """Whole config ``sections`` and the run's seed: the settings of most stages."""
    return {**{name: section_values(getattr(ctx.config, name)) for name in sections}, "seed": ctx.seed}


class Stage:
    """One pipeline stage. Subclasses set the class attributes and override what they need."""

    name: ClassVar[str]
    #: stages this one reads, in the order their keys enter its cache key (absent ones are skipped)
    needs: ClassVar[tuple[str, ...]] = ()
    #: bump to recompute this stage (and its readers) in existing run folders
    version: ClassVar[int] = 1
    #: run once per studied model, as ``NAME-tuned`` and ``NAME-base``
    per_model: ClassVar[bool] = False
    #: the section of results.json the stage fills (None: none) ...
    result_key: ClassVar[str | None] = None
    #: ... with this JSON file of its folder, or (None) with its summary; a stage named in
    #: :data:`~irmscope.artifacts.RESULT_FILES` gets its file from there unless it sets one
    result_file: ClassVar[str | None] = None
    #: what a run must have for the stage to run: names of :data:`REQUIREMENTS`
    requires: ClassVar[tuple[str, ...]] = ()
    #: the config sections whose whole values, with the seed, are the stage's settings (empty: the stage
    #: overrides :meth:`settings`)
    config_sections: ClassVar[tuple[str, ...]] = ()
    #: the finished stage folders (e.g. ``saes-tuned``) whose keys enter this one's, all required; None:
    #: every present ``needs``
    reads: ClassVar[tuple[str, ...] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A stage's result file is named once, in ``RESULT_FILES`` under the stage's name (where later
        readers such as :class:`irmscope.runs.Run` find it too), not again in the stage."""
        super().__init_subclass__(**kwargs)
        if "result_file" not in cls.__dict__ and "name" in cls.__dict__:
            cls.result_file = RESULT_FILES.get(cls.name)

    def applies(self, ctx: RunContext) -> bool:
        """Whether this run has this stage (e.g. only runs with a tuned model have an elicitation): by
        default, whether it meets every one of ``requires``."""
        return all(REQUIREMENTS[name](ctx) for name in self.requires)

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        """The config values the stage's output depends on (its share of the cache key): by default the
        ``config_sections`` and the seed."""
        if not self.config_sections:
            raise NotImplementedError(f"stage {self.name} must declare its settings")
        return section_settings(ctx, *self.config_sections)

    def upstream(self, ctx: RunContext, model: str | None) -> list[StageResult]:
        """The finished stages whose keys enter this one's key: ``reads``, or by default every present
        ``needs``."""
        if self.reads is not None:
            return [ctx.finished[name] for name in self.reads]
        return [ctx.finished[name] for name in self.needs if name in ctx.finished]

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        """Write the stage's files into ``work``; return a JSON-able summary (kept in ``done.json``)."""
        raise NotImplementedError(f"stage {self.name} must say how it is computed")

    def result(self, ctx: RunContext) -> dict[str, Any]:
        """This stage's top-level entries of ``results.json``: by default ``result_key`` holding
        ``result_file`` (or the summary), or ``None`` when the stage did not run."""
        if self.result_key is None:
            return {}
        if self.name not in ctx.finished:
            return {self.result_key: None}
        if self.result_file:
            return {self.result_key: ctx.read_json(self.name, self.result_file)}
        return {self.result_key: ctx.stage_outputs(self.name)}

    def announce(self, ctx: RunContext) -> list[str]:
        """Lines to print as soon as the stage has finished (a warning the user must not miss)."""
        return []

    def expected_instances(self, ctx: RunContext) -> list[str]:
        """The stage folder names this stage will run as, judged before the stages it needs have finished
        (only for counting a run's stages): ``requires`` as :data:`FORECASTS` judges them; a stage with
        its own :meth:`applies` is asked that instead."""
        own_rule = type(self).applies is not Stage.applies
        if not (self.applies(ctx) if own_rule else all(FORECASTS[name](ctx) for name in self.requires)):
            return []
        if not self.per_model:
            return [self.name]
        labels = ("tuned", "base") if FORECASTS["tuned"](ctx) else ("base",)
        return [f"{self.name}-{label}" for label in labels]

    def instance_names(self, ctx: RunContext) -> list[tuple[str, str | None]]:
        """``(stage folder name, model label)`` for each time the stage runs in this run."""
        if self.per_model:
            return [(f"{self.name}-{label}", label) for label in ctx.subjects]
        return [(self.name, None)]


#: every registered stage, in the order the runner computes them
STAGES: dict[str, Stage] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: add a stage to the pipeline, after every stage it needs."""
    missing = [name for name in cls.needs if name not in STAGES]
    if missing:
        raise ValueError(f"stage {cls.name} needs {missing}, which are not registered before it")
    if cls.name in STAGES:
        raise ValueError(f"a stage named {cls.name} is registered already")
    STAGES[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a stage (for tests and experiments that add one for a while)."""
    STAGES.pop(name)


def readers_of(ctx: RunContext, running: str, later: Sequence[tuple[str, str]]) -> set[str]:
    """The stage folders of ``later`` (``(folder name, stage name)``, in run order) whose keys will hold
    the key of the folder ``running``, directly or through other later folders: once ``running``
    computes, they compute too, whatever finished folders they have. Each stage is asked for its
    :meth:`Stage.upstream` as if every folder of the run had finished; a stage that cannot answer so (a
    user's stage reading more than names) counts as a reader, so the forecast errs towards computing."""
    planned = [*ctx.finished, running, *(folder for folder, _ in later)]
    as_if = dataclasses.replace(ctx, finished={name: StageResult(name, "", Path()) for name in planned})
    readers = {running}
    for folder, stage_name in later:
        stage = STAGES[stage_name]
        model = folder.removeprefix(f"{stage.name}-") if stage.per_model else None
        try:
            upstream = {result.name for result in stage.upstream(as_if, model)}
        except Exception:  # noqa: BLE001 - a forecast for the time left, never a reason to stop the run
            upstream = readers
        if upstream & readers:
            readers.add(folder)
    return readers - {running}


def stage_names(per_model_labels: tuple[str, ...] = ("tuned", "base")) -> list[str]:
    """The stage folder names of a full run (with a tuned model), in order: the documented stage list."""
    names = []
    for stage in STAGES.values():
        if stage.per_model:
            names += [f"{stage.name}-{label}" for label in per_model_labels]
        else:
            names.append(stage.name)
    return names
