"""Checks on what a user typed, in one place, so each bad input is one ``error:`` line before any work.

The command line and the configuration both use these: typed config fields (a seed that is a whole number
at least 0, finite floats, booleans that are not numbers, non-blank names), output-path checks that never
replace an earlier result unless asked, and a text-file reader that accepts a UTF-8 byte-order mark (a file
saved by a Windows editor would otherwise hide its first word behind an invisible ``\\ufeff``).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AllowInfNan, BeforeValidator, Field, StrictBool

from irmscope.errors import IrmscopeError


def _not_bool(value: object) -> object:
    """YAML and JSON ``true`` would otherwise count as the number 1."""
    if isinstance(value, bool):
        raise ValueError(f"a number is needed here, not {str(value).lower()}")
    return value


# Config field types: numbers that are not booleans (`n_prompts=true` is not 1), floats that are finite
# (NaN or infinity would poison every later number), booleans that are not numbers or words (`lora=1`),
# seeds that numpy accepts. Numeric strings stay accepted, since YAML reads `1e-3` as a string.
Int = Annotated[int, BeforeValidator(_not_bool)]
Seed = Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]
Index = Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]  # a layer number
Float = Annotated[float, BeforeValidator(_not_bool), AllowInfNan(False)]
Bool = StrictBool
Name = Annotated[str, Field(pattern=r"\S")]  # a path, model or dataset name: never empty or blank
#: matrix-product precision of passes that only sample or read activations (irmscope.models.precision)
Precision = Literal["auto", "float32", "bfloat16"]


def finite(value: float, what: str) -> float:
    """``value`` if it is a finite number; NaN would slip past every ``<``/``>`` range check."""
    if not math.isfinite(value):
        raise IrmscopeError(f"{what} must be a finite number, not {value}")
    return value


def env_int(name: str, default: int) -> int:
    """A whole-number environment variable (e.g. ``WORLD_SIZE``, which launchers such as torchrun set)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise IrmscopeError(
            f"environment variable {name}={raw!r} is not a whole number; unset it or let torchrun set it"
        ) from None


def check_utf8(args: Sequence[str]) -> None:
    """Refuse arguments that are not UTF-8 (Python keeps their bytes as lone surrogates, which fail only
    later, when the text is printed or written)."""
    for number, arg in enumerate(args, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise IrmscopeError(
                f"argument {number} ({shown}) is not UTF-8 text; retype it (or rename the file) in UTF-8"
            ) from None


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The text of a user's file, UTF-8 with or without a byte-order mark; a one-line error otherwise."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise IrmscopeError(f"{what} {path} does not exist: check the path") from None
    except IsADirectoryError:
        raise IrmscopeError(f"{what} {path} is a folder: give a file") from None
    except UnicodeDecodeError:
        raise IrmscopeError(f"{what} {path} is not UTF-8 text: save it as UTF-8") from None
    except OSError as err:
        raise IrmscopeError(f"cannot read {what} {path} ({err.strerror}): check its permissions") from None


def check_output(
    path: str | Path, overwrite: bool, kind: Literal["file", "folder"] = "file", option: str = "--out"
) -> Path:
    """Check before any work that ``path`` can take a new ``kind`` of output without losing an old one.

    A file output refuses a folder, and an existing file unless ``overwrite``; a folder output refuses a
    file, and a folder that already holds anything unless ``overwrite``. Nothing is deleted here: the
    writer replaces what it writes, atomically, once the new result exists.
    """
    path = Path(path)
    if str(path).strip() == "":
        raise IrmscopeError(f"{option} is empty; give a {kind} path")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise IrmscopeError(f"{option} {path}: {parent} is a file, not a folder; choose another path")
    if kind == "file":
        if path.is_dir():
            raise IrmscopeError(f"{option} {path} is a folder; give a file path")
        if path.exists() and not overwrite:
            raise IrmscopeError(f"{option} {path} already exists; pass --overwrite to replace it")
    else:
        if path.exists() and not path.is_dir():
            raise IrmscopeError(f"{option} {path} is a file; give a folder path")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise IrmscopeError(
                f"{option} {path} already holds files; pass --overwrite to write over them, or choose "
                "an empty or new folder"
            )
    return path


def remove(paths: Sequence[str | Path]) -> None:
    """Delete earlier outputs the user asked to replace (``--overwrite``) that a writer cannot write over
    in place (a finished folder it would otherwise reuse)."""
    for path in map(Path, paths):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
