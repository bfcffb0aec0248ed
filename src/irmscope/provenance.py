"""Where a run's numbers came from: the commit of the code that computed them and the machine it ran on.

A run's manifest records both (``results.json`` → ``manifest.code`` and ``manifest.machine``), and the
pipeline benchmark copies them from the run it prices, so a published number names its commit and machine
without anyone writing them down by hand. The machine matters as much as the commit: the BLAS sums in another
order on another kind of CPU, and where the CPU multiplies bfloat16 natively the ``auto`` precisions run
the passes in bfloat16 (:mod:`irmscope.models.precision`), so the same commit and seed tune a different
model on another machine (docs/findings.md, "Timings of the two commands").
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

_CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first value of every field of Linux's /proc/cpuinfo (empty elsewhere), read once per process:
    the run's manifest describes the machine after every stage folder."""
    fields: dict[str, str] = {}
    if _CPUINFO.is_file():
        for line in _CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def _cpuinfo_field(name: str) -> str:
    """The first value of ``name`` in /proc/cpuinfo ('' where there is none)."""
    return _cpuinfo().get(name, "")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; none elsewhere)."""
    return frozenset(_cpuinfo_field("flags").split())


def cpu_kind() -> str:
    """The CPU's vendor and the vector instructions torch's kernels use, usable as a file name
    (``AuthenticAMD-AVX512``): machines of one kind compute the same floats, machines of two kinds differ
    in their last digits, and a few numbers built on them (a tie between two completions, an SAE trained on
    those floats) by more."""
    vendor = _cpuinfo_field("vendor_id") or platform.processor() or platform.machine()
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{vendor}-{torch.backends.cpu.get_cpu_capability()}")


def cpu_multiplies_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (faster than float32, not emulated): AVX512-BF16
    or AMX, through oneDNN. oneDNN's own check accepts any AVX512 CPU, where it emulates bfloat16 and can be
    slower than float32. What ``auto`` precision means on a CPU (:mod:`irmscope.models.precision`)."""
    return torch.backends.mkldnn.is_available() and bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def describe_machine() -> dict[str, Any]:
    """The CPU's model name, its kind (:func:`cpu_kind`), whether it multiplies bfloat16 natively, its
    cores and the threads torch uses."""
    return {
        "cpu": _cpuinfo_field("model name") or platform.processor() or platform.machine(),
        "kind": cpu_kind(),
        "native_bfloat16": cpu_multiplies_bfloat16(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


@functools.cache
def code_commit() -> dict[str, Any] | None:
    """The git commit of the irmscope source this process imported, and whether its tracked files differ
    from it (``modified``); ``None`` when the package is not tracked by a git checkout (installed from a
    wheel, even into a virtual environment inside some other repository) or git is missing. Looked up once
    per process."""
    here = Path(__file__).resolve()
    return checkout_commit(here.parent, tracking=here)


def checkout_commit(folder: Path, tracking: Path | None = None) -> dict[str, Any] | None:
    """The commit checked out in the git work tree holding ``folder`` and whether its tracked files differ
    from it (untracked files, such as run folders, do not count); ``None`` outside a work tree, or when the
    work tree does not track the file ``tracking`` (git finds the repository of any folder above, so a
    package installed inside another project's checkout would otherwise report that project's commit)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit or (
        tracking is not None and git("ls-files", "--error-unmatch", "--", str(tracking)) is None
    ):
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "modified": bool(changes) if changes is not None else None}
