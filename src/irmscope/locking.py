"""Exclusive locks on output folders, so two processes never write one run, cache or SAE folder at once.

A lock is an OS advisory lock (``flock``) on a small file inside the folder (or beside an output). The
kernel drops it when its process exits, however it exits (a SIGKILL too), so a killed run never leaves a
stale lock behind and the next run resumes at once. The file is removed when the lock is released; while
held, it records who holds it (pid, host, start time, command line), which a refused process prints.

Locks are per open file description, so the same process taking the same folder twice is refused too: a
folder is written by one owner at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from irmscope.errors import IrmscopeError

LOCK_NAME = ".irmscope.lock"
#: what each lock is called in its one-line error; the commands' early look (:func:`refuse_if_locked`) and
#: the lock the library takes later name an output the same way
RUN_FOLDER = "run folder"
ACTIVATION_CACHE = "activation cache"
SAE_FOLDER = "SAE folder"
AUDIT_FOLDER = "audit folder"
#: a look (:func:`refuse_if_locked`) holds a shared lock for microseconds; a process that meets one while
#: taking the lock tries again this many times, this many seconds apart, before it calls the lock taken
_RETRIES, _RETRY_SECONDS = 5, 0.01


def _holder(lock_file: Path) -> str:
    """Who holds ``lock_file``, in a few words (best effort: the file may be mid-write)."""
    try:
        info = json.loads(lock_file.read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
        return f"process {info['pid']} on {info['host']} (since {started}: {info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block; the lock file
    lives inside it. For run folders, which irmscope owns whole.

    Raises :class:`IrmscopeError` at once, naming the holder, when another process (or another lock in
    this process) holds it: waiting would hide the mistake of pointing two runs at one folder.
    ``what`` names the folder in that message ("run folder", ...).
    """
    folder = Path(folder)
    _refuse_a_file(folder, what)
    _make_dirs(folder, what)
    with _exclusive(_folder_lock_file(folder), f"{what} {folder}"):
        yield folder


@contextmanager
def output_lock(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Like :func:`folder_lock` for an output a command writes (an activation cache, an SAE folder), but
    with the lock file beside it (``.NAME.lock``, removed on release), so the output holds exactly what
    the command wrote."""
    path = Path(path)
    _make_dirs(path.parent, what)
    with _exclusive(_output_lock_file(path), f"{what} {path}"):
        yield path


def refuse_if_locked(path: str | os.PathLike, what: str, *, whole_folder: bool = True) -> None:
    """Raise the error :func:`folder_lock` (``whole_folder``) or :func:`output_lock` would raise on
    ``path`` if another process holds that lock now (or, for a folder, if ``path`` is a file); create
    nothing.

    A look, not a hold: commands call it before their libraries load (seconds on two cores), so that a
    second run on a folder in use is refused at once, then take the lock itself, which stays the guard.
    The look holds a shared lock for an instant; a process taking the lock in that instant tries again
    (:data:`_RETRIES`) instead of calling the folder in use.
    """
    path = Path(path)
    if whole_folder:
        _refuse_a_file(path, what)
    lock_file = _folder_lock_file(path) if whole_folder else _output_lock_file(path)
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:  # no lock file (nobody holds it) or no folder yet: the lock itself will tell
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(f"{what} {path}", lock_file) from None
    finally:
        os.close(fd)  # releases the shared lock, if taken


def _refuse_a_file(folder: Path, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise IrmscopeError(f"{what} {folder} is a file, not a folder; choose another output path")


def _folder_lock_file(folder: Path) -> Path:
    return folder / LOCK_NAME


def _output_lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


def _in_use(described: str, lock_file: Path) -> IrmscopeError:
    """The one-line error for ``described`` (e.g. "run folder PATH") while ``lock_file`` is held."""
    holder = _holder(lock_file)
    return IrmscopeError(
        f"{described} is in use by {holder}; wait for it to finish or choose another output folder"
    )


def _make_dirs(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise IrmscopeError(f"cannot create {what} {folder}: {err.strerror}; choose a writable path") from err


@contextmanager
def _held(lock_file: Path, blocking: bool, described: str = "") -> Iterator[int]:
    """Hold ``lock_file`` for the ``with`` block and yield its descriptor; the file is removed on release.

    Removal happens while the lock is still held, and a process that locked a file since removed (it
    opened the old file before the removal) sees that the path no longer names its file and tries again:
    two processes can never both believe they hold the lock. Not ``blocking``: raise at once, naming the
    holder of ``described``, when the lock is taken; ``blocking``: wait for it.
    """
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_exclusively(fd, blocking)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(described, lock_file) from None
        if _same_file(fd, lock_file):
            break
        os.close(fd)  # the holder removed it between our open and our lock: take the new one
    try:
        yield fd
    finally:
        try:
            os.unlink(lock_file)
        except FileNotFoundError:
            pass
        os.close(fd)  # closing the descriptor releases the lock


def _lock_exclusively(fd: int, blocking: bool) -> None:
    """``flock`` ``fd`` exclusively; not ``blocking``, raise ``BlockingIOError`` if it stays taken through
    a few short retries (long enough for a :func:`refuse_if_locked` look to pass, far too short to wait
    for a holder)."""
    if blocking:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    for attempt in range(_RETRIES + 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == _RETRIES:
                raise
            time.sleep(_RETRY_SECONDS)


@contextmanager
def _exclusive(lock_file: Path, described: str) -> Iterator[None]:
    """Hold ``lock_file`` exclusively, or raise at once naming its holder; record this process in it, so
    that a refused process can say who holds the folder. A finished or failed command leaves nothing
    behind (see :func:`_held`)."""
    with _held(lock_file, blocking=False, described=described) as fd:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


@contextmanager
def wait_for_lock(lock_file: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file``, waiting for any other holder to finish first.

    For short critical sections that two cooperating processes may both enter (finishing one pipeline
    stage): the second waits, then sees the first one's finished result instead of redoing it. The file
    is removed on release, with the same check as :func:`_held`.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with _held(lock_file, blocking=True):
        yield
