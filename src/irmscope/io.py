"""Atomic writes, so a killed process never leaves a half-written artifact under its final name, and file
digests, so a reader can tell a file changed after it was written (truncated by a full disk, bit rot, a
partial copy) from a good one."""

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The rename is atomic on POSIX file systems, so readers see either the old file or the complete new one.
    The file gets the permissions a plain ``open`` would give it (``0o666`` less the umask), not the
    owner-only ``0o600`` of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""

    def _write(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")

    return atomic_write(path, _write)


def atomic_write_dir(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder beside ``target`` with ``write(tmp_dir)``, then rename it to ``target``.

    A killed writer leaves no half-written folder under the final name; when two processes race, the first
    rename wins and the loser's copy is discarded (both see a complete ``target``).
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fingerprint(**settings: Any) -> str:
    """A short stable hash of everything that determines an artifact's contents (sorted JSON)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


DIGEST_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex digest}`` of the file at ``path``, read in 1 MiB chunks.

    Streaming keeps memory flat for multi-GB shards and weight files; record the result beside whatever
    lists the file and check it later with :func:`verify_file`.
    """
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(DIGEST_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": sha.hexdigest()}


def verify_file(path: str | os.PathLike, expected: Mapping[str, Any], check_hash: bool = True) -> str | None:
    """None when ``path`` matches ``expected`` (a :func:`file_digest`), else a one-line problem naming it.

    Only the keys present in ``expected`` are checked. The size comes from ``stat`` and costs nothing;
    ``check_hash=False`` stops there, for a cheap check of many large files before the full read.
    """
    path = Path(path)
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if "bytes" in expected and size != int(expected["bytes"]):
        return f"{path} has {size} bytes, not the {int(expected['bytes'])} recorded when it was written"
    if check_hash and "sha256" in expected and file_digest(path)["sha256"] != expected["sha256"]:
        return f"{path} does not match the sha256 recorded when it was written (its contents changed)"
    return None


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` (name → array) to one ``.npz`` file at ``path``, atomically."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append ".npz" to a bare temp name
            np.savez(handle, **arrays)

    return atomic_write(path, write)
