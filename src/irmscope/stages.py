"""Cached, resumable pipeline stages.

Each stage's output folder is keyed by a hash of the stage's settings and of the keys of the stages it
reads, so changing one setting recomputes only what depends on it. A stage works in a ``.work`` folder that
survives a kill (so a stage with internal checkpoints, such as the activation cache, resumes mid-way) and is
renamed to its final name, with a ``done.json`` summary, only when it has finished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irmscope.io import fingerprint, write_json

DONE = "done.json"


@dataclass(frozen=True)
class StageResult:
    name: str
    key: str
    dir: Path
    summary: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


def stage_folder(root: str | Path, name: str, key: str) -> Path:
    """Where the finished stage ``name`` with cache key ``key`` lives in the run folder ``root``."""
    return Path(root) / "stages" / f"{name}-{key}"


def run_stage(
    root: Path,
    name: str,
    settings: dict[str, Any],
    upstream: list[StageResult],
    compute: Callable[[Path], dict[str, Any]],
) -> StageResult:
    """Return the finished stage ``name`` for these inputs, computing it with ``compute(work_dir)`` if needed.

    ``compute`` writes its files into ``work_dir`` and returns a JSON-able summary.
    """
    key = fingerprint(stage=name, settings=settings, upstream=[u.key for u in upstream])
    stages = Path(root) / "stages"
    final = stage_folder(root, name, key)
    if (final / DONE).is_file():
        return StageResult(name, key, final, json.loads((final / DONE).read_text()), cached=True)
    work = stages / f".{name}-{key}.work"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = compute(work)
    summary = {**summary, "stage_seconds": round(time.perf_counter() - start, 2)}
    write_json(work / DONE, {"settings": settings, **summary})
    if final.exists():  # an unfinished leftover under the final name cannot happen, but never merge into one
        shutil.rmtree(final)
    os.replace(work, final)
    return StageResult(name, key, final, json.loads((final / DONE).read_text()))
