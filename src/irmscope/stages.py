"""Cached, resumable, verified pipeline stages.

Each stage's output folder is keyed by a hash of the stage's settings and of the keys of the stages it
reads, so changing one setting recomputes only what depends on it. A stage works in a ``.work`` folder that
survives a kill (so a stage with internal checkpoints, such as the activation cache, resumes mid-way) and is
renamed to its final name, with a ``done.json`` summary, only when it has finished.

Two guarantees on top of that:

- **One writer per stage.** Finishing a stage happens under an exclusive lock on ``.NAME-KEY.lock``, so two
  processes that reach the same stage never share its ``.work`` folder: the second waits, then finds the
  first one's finished stage. (A whole run also holds a lock on its folder: see
  :func:`irmscope.pipeline.run_pipeline`.) The lock dies with its process, so a killed run's ``.work``
  folder is resumed by the next run, which is the only process that can then hold it.
- **Verified outputs.** ``done.json`` records the size and SHA-256 of every file the stage wrote. A cached
  stage is verified before it is reused; a truncated or altered file is named, the damaged stage is moved
  aside to ``.NAME-KEY.damaged`` (kept for inspection, never merged), and the stage is computed again.
  Stages finished by versions that recorded no digests are reused unverified.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irmscope.io import file_digest, fingerprint, verify_file, write_json
from irmscope.locking import wait_for_lock

DONE = "done.json"
#: the key of a stage's summary that times its parts (``{part: seconds}``, e.g. one per leaderboard method):
#: bookkeeping like the stage's own time, copied to the run's manifest, where benchmarks/bench_pipeline.py
#: names the slowest part of a stage far above its compute floor
PART_SECONDS = "part_seconds"
#: the key of ``done.json`` that lists every output file's digest (not part of the stage's summary)
FILES = "files"


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


def finished_stage_folders(root: str | Path, name: str) -> list[Path]:
    """Every finished folder of the stage ``name`` in the run folder ``root``, whatever its key (exactly
    ``name`` followed by a key: ``saes`` does not match ``saes-tuned-KEY``)."""
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}")  # keys: io.fingerprint
    return [
        folder
        for folder in stage_folder(root, name, "*").parent.glob(f"{name}-*")
        if pattern.fullmatch(folder.name) and (folder / DONE).is_file()
    ]


def output_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """The digest of every file below ``folder`` except ``done.json``, by path relative to it."""
    return {
        path.relative_to(folder).as_posix(): file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != DONE
    }


def stage_damage(folder: Path) -> str | None:
    """What is wrong with the finished stage in ``folder`` (a one-line description), or ``None``."""
    try:
        done = json.loads((folder / DONE).read_text())
    except (OSError, ValueError) as err:
        return f"{folder / DONE} is unreadable ({err})"
    for relative, expected in (done.get(FILES) or {}).items():
        problem = verify_file(folder / relative, expected)
        if problem:
            return problem
    return None


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
    with wait_for_lock(stages / f".{name}-{key}.lock"):
        if (final / DONE).is_file():
            damage = stage_damage(final)
            if damage is None:
                return _finished(name, key, final, cached=True)
            print(f"[irmscope] stage {name}: {damage}; computing the stage again", flush=True)
            damaged = stages / f".{name}-{key}.damaged"
            shutil.rmtree(damaged, ignore_errors=True)
            os.replace(final, damaged)
        work = stages / f".{name}-{key}.work"
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        summary = compute(work)
        summary = {**summary, "stage_seconds": round(time.perf_counter() - start, 2)}
        write_json(work / DONE, {"settings": settings, **summary, FILES: output_digests(work)})
        if final.exists():  # an unfinished leftover under the final name: never merge into one
            shutil.rmtree(final)
        os.replace(work, final)
        return _finished(name, key, final, cached=False)


def _finished(name: str, key: str, folder: Path, cached: bool) -> StageResult:
    done = json.loads((folder / DONE).read_text())
    done.pop(FILES, None)
    return StageResult(name, key, folder, done, cached=cached)
