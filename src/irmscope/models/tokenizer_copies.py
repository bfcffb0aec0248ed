"""Copies of a loaded tokenizer that cost milliseconds instead of a read or a deep copy.

Stages, tests and the smoke preset load the same few tokenizers many times in one process: the default
model's (49,152 tokens) from its folder, a tuned model's from its checkpoint, the tiny models' from their
build. Reading one takes 0.3 s or more here, and a deep copy 0.2 s, nearly all of it the JSON round trip of
the Rust backend. A :class:`TokenizerCopies` keeps one tokenizer and hands out copies whose Python side is a
deep copy and whose Rust backend is shared.

Sharing the backend is safe for what a call sets on it: every encoding call sets the backend's padding,
truncation and splitting of special tokens again. Each :meth:`TokenizerCopies.copy` sets them back to how
they were first kept, so a copy saved right away (``save_pretrained`` writes them) writes what the kept
tokenizer would. A change that stays (added tokens, another post-processor or normaliser) would reach every
copy, so each copy first compares the backend with the one first kept (:func:`backend_state`) and, if a
copy changed it, gives that and later copies the original back. A copy that will be changed, or saved
after it has been called, while other copies are in use needs a backend of its own: ``copy.deepcopy`` it
as soon as it is handed out (the deep copy starts from the kept settings and then sees only its own calls).
So does a copy used in one thread while another thread uses another copy: the tokenizers library refuses
("Already borrowed") a backend that two threads use at once. irmscope tokenises in one thread.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

#: folders whose tokenizers are kept, at most (the default model's, with its backend's JSON, holds about
#: 11 MB); the oldest goes first
FOLDERS_KEPT = 4


class TokenizerCopies:
    """One kept tokenizer and cheap copies of it (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
        self._kept, backend = tokenizer, getattr(tokenizer, "backend_tokenizer", None)
        self._backend_json = None if backend is None else backend.to_str()
        self._backend_state = None if backend is None else backend_state(backend)
        self._call_settings = None if backend is None else _call_settings(backend)

    def copy(self) -> Any:
        """A copy of the kept tokenizer: its Python side deep-copied, its Rust backend shared (restored
        first if a copy changed it for good); a tokenizer without a Rust backend is deep-copied whole."""
        if self._backend_json is None:
            return copy.deepcopy(self._kept)
        backend = self._kept.backend_tokenizer
        if backend_state(backend) != self._backend_state:
            backend = self._kept._tokenizer = Tokenizer.from_str(self._backend_json)
        _set_call_settings(backend, self._call_settings)  # what the last call set, set back
        return copy.deepcopy(self._kept, {id(backend): backend})


def backend_state(backend: Tokenizer) -> tuple:
    """What a caller can change for good in a tokenizer's Rust backend: its added tokens, the parts of its
    pipeline and its model's kind (the settings every call sets, :func:`_call_settings`, are left out)."""
    parts = (backend.normalizer, backend.pre_tokenizer, backend.post_processor, backend.decoder)
    return (
        backend.get_vocab_size(with_added_tokens=True),
        sorted((i, token.__getstate__()) for i, token in backend.get_added_tokens_decoder().items()),
        [None if part is None else part.__getstate__() for part in parts],
        type(backend.model).__name__,
    )


def _call_settings(backend: Tokenizer) -> tuple[dict | None, dict | None, bool]:
    """The backend's padding, truncation and splitting of special tokens: what every encoding call sets."""
    return backend.padding, backend.truncation, backend.encode_special_tokens


def _set_call_settings(backend: Tokenizer, settings: tuple[dict | None, dict | None, bool]) -> None:
    padding, truncation, split_special_tokens = settings
    if padding is None:
        backend.no_padding()
    else:
        backend.enable_padding(**padding)
    if truncation is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(**truncation)
    backend.encode_special_tokens = split_special_tokens


def folder_tokenizer(folder: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained(folder)`` from the local folder, read once per process while the
    folder's top-level entries are unchanged (names, sizes and modification times; a folder inside it counts
    by its own time, which its files' edits do not change); every call returns a copy."""
    from transformers import AutoTokenizer

    folder = Path(folder).resolve()
    entries = _entries(folder)
    kept = _FOLDERS.get(folder)
    if kept is None or kept[0] != entries:
        _FOLDERS.pop(folder, None)  # the folder changed: its earlier tokenizer is let go
        if len(_FOLDERS) >= FOLDERS_KEPT:
            del _FOLDERS[next(iter(_FOLDERS))]
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        _FOLDERS[folder] = kept = entries, TokenizerCopies(tokenizer)
    return kept[1].copy()


def _entries(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Each top-level entry of ``folder`` by name, size and modification time; an entry removed while the
    folder is listed (a trainer rotating its checkpoints) is left out."""
    entries = []
    for entry in sorted(folder.iterdir()):
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue
        entries.append((entry.name, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


#: each folder's entries when its tokenizer was read, and the tokenizer (oldest first)
_FOLDERS: dict[Path, tuple[tuple[tuple[str, int, int], ...], TokenizerCopies]] = {}
