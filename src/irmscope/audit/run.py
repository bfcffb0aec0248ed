"""The blind audit: what did tuning reward, asked of a tuned model and its base with no lexicon in hand.

:func:`audit` works on loaded models and prompts; :func:`run_audit` is what ``irmscope audit`` calls: it
checks the inputs before any work, loads the models and prompts, runs the audit and writes ``audit.json``,
``words.csv`` (every audited word), ``elicited.tsv`` (the called words as a lexicon a reward can be
built from: ``load_reward("lexicon:DIR/elicited.tsv")``) and, through ``page_writer``, ``audit.html``.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.audit.compare import called_words, compare_table, lexicon_of
from irmscope.audit.completions import completion_changes, examples
from irmscope.audit.inside import divergence_site, model_diff
from irmscope.audit.shift import (
    FDR_Q,
    UnitShifts,
    bootstrap_intervals,
    noise_floor,
    relative_shift,
    unit_shifts,
    vocabulary_words,
)
from irmscope.errors import IrmscopeError
from irmscope.io import atomic_write, write_json
from irmscope.locking import AUDIT_FOLDER, output_lock
from irmscope.models.adapters import parse_site
from irmscope.models.generation import Sampling
from irmscope.models.hooks import resolve_site
from irmscope.models.loading import LoadedModel
from irmscope.rewards.lexicon import Lexicon
from irmscope.sae.crosscoder import Crosscoder, CrosscoderConfig, save_crosscoder
from irmscope.stats import bootstrap_ci
from irmscope.validation import check_output

#: the folder under the audit's that holds the crosscoder
CROSSCODER_DIR = "crosscoder"
#: the exported lexicon's values span ±EXPORT_RANGE, like VADER's ratings and the planted lexicons
EXPORT_RANGE = 4.0
TOP = 20
#: the columns of an audit's words.csv that a comparison with a lexicon reads again
TABLE_COLUMNS = (
    "word",
    "relative_shift",
    "relative_low",
    "relative_high",
    "beyond_drift",
    "base_count",
    "z",
    "called",
)
#: the audit's phases, timed in ``result["seconds"]``
PHASES = ("sampling", "scoring", "statistics", "inside")


def audit(
    tuned: LoadedModel,
    base: LoadedModel,
    prompts: Sequence[str],
    *,
    lexicon: Lexicon | None = None,
    completions: tuple[Sequence[str], Sequence[str]] | None = None,
    completion_tokens: int = 32,
    seed: int = 0,
    q: float = FDR_Q,
    n_resamples: int = 1000,
    top: int = TOP,
    crosscoder: CrosscoderConfig | None = None,
    site: str | None = None,
    shifts: UnitShifts | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Sample a completion of every prompt from both models (or take ``completions``, ``(base, tuned)``,
    sampled already, e.g. by the pipeline's evaluate stage), score every vocabulary word on the texts,
    call words above the noise floor, and describe the completions; with ``lexicon``, compare; with
    ``crosscoder``, train one at ``site`` (default: the top-divergence layer's residual stream) and say
    what changed inside (:mod:`.inside`). ``shifts``: the word shifts of exactly these prompts and
    ``completions`` read already (:class:`~irmscope.audit.shift.UnitSums`, e.g. by the pipeline's read
    stage, in the same pass as other methods' statistics), with the activations at their site.

    Returns the result (JSON-ready) with ``table``: every word's columns (see :func:`word_table`), and
    ``crosscoder``: the trained crosscoder or None.
    """
    _check_pair(tuned, base, prompts)
    site = _audit_site(tuned, base, crosscoder, site, shifts, completions)
    clock = {"start": time.perf_counter()}
    # batches of 64, fixed: sampling is seeded per batch, so the audits in docs/replicates.md rerun exactly
    # (the default 128 is ~10% faster here)
    sampling = Sampling(max_new_tokens=completion_tokens, batch_size=64, seed=seed, progress=progress)
    base_completions, tuned_completions = _completion_pair(tuned, base, prompts, completions, sampling)
    clock["sampled"] = time.perf_counter()
    vocabulary = vocabulary_words(base.tokenizer)
    words = list(vocabulary)
    shifts = _word_shifts(
        tuned, base, prompts, (base_completions, tuned_completions), vocabulary, completion_tokens,
        site if crosscoder else None, read=shifts,
    )  # fmt: skip
    clock["scored"] = time.perf_counter()
    table, floor, rewarded, penalised = _call_words(words, shifts, q=q, n_resamples=n_resamples, seed=seed)
    changes = completion_changes(base_completions, tuned_completions, seed=seed, n_resamples=n_resamples)
    rows = _Rows(words, table, changes.pop("counts"), changes["total_abs_change"])
    top_rewarded, top_penalised = _top_called(floor["beyond"], rewarded, penalised, top)
    naive = np.argsort(-table["mean_log_ratio"], kind="stable")[:top]
    result: dict[str, Any] = {
        "n_prompts": len(prompts),
        "completion_tokens": completion_tokens,
        "n_words": len(words),
        "n_resamples": n_resamples,
        "floor": _floor_summary(table, floor, rewarded, penalised, q=q, eps=shifts.uniform_count),
        "shared_log_ratio_per_position": bootstrap_ci(shifts.baseline, seed=seed).as_dict(),
        "rewarded": rows(top_rewarded),
        "penalised": rows(top_penalised),
        "naive_log_ratio_top": rows(naive),
        "completions": changes,
        "examples": examples([words[i] for i in top_rewarded[:5]], prompts, tuned_completions, per_word=2),
        "samples": {
            "prompts": list(prompts),
            "base_completions": base_completions,
            "tuned_completions": tuned_completions,
        },
        "reward": None,
    }
    if lexicon is not None:
        result["reward"] = compare_table(table, lexicon, seed=seed, n_resamples=n_resamples)
    clock["done"] = time.perf_counter()
    result["inside"], result["crosscoder"] = None, None
    if crosscoder is not None:
        result["inside"], result["crosscoder"] = model_diff(
            tuned, shifts.activations, shifts.prompt_tokens, vocabulary, table["beyond_drift"], crosscoder,
            n_resamples=n_resamples, seed=seed, progress=progress,
        )  # fmt: skip
    clock["inside"] = time.perf_counter()
    spans = pairwise(clock.values())  # the clock's marks close the phases in order
    result["seconds"] = {phase: end - start for phase, (start, end) in zip(PHASES, spans, strict=True)}
    result["table"] = table
    return result


def _word_shifts(
    tuned: LoadedModel,
    base: LoadedModel,
    prompts: Sequence[str],
    sides: tuple[Sequence[str], Sequence[str]],
    vocabulary: dict[str, int],
    completion_tokens: int,
    site: str | None,
    read: UnitShifts | None = None,
) -> UnitShifts:
    """Every vocabulary word's shifts on the prompts continued by each side's completions (base, tuned),
    with the activations at ``site`` read on the same passes; or ``read``, read already, once checked to
    be of these prompts and words."""
    if read is not None:
        if read.statistic.shape != (len(prompts), len(vocabulary)):
            raise IrmscopeError(
                f"the word shifts given are {read.statistic.shape} (units, words) for {len(prompts)} "
                f"prompts and {len(vocabulary)} vocabulary words; read the same samples again"
            )
        return read
    max_length = 2 * (max(len(base.tokenizer(p)["input_ids"]) for p in prompts) + completion_tokens)
    return unit_shifts(
        tuned, base, prompts, sides, list(vocabulary.values()), max_length=max_length, site=site
    )


def _audit_site(
    tuned: LoadedModel,
    base: LoadedModel,
    crosscoder: CrosscoderConfig | None,
    site: str | None,
    shifts: UnitShifts | None,
    completions: tuple[Sequence[str], Sequence[str]] | None,
) -> str | None:
    """The site the dictionaries read: that of ``shifts`` read already (which need the completions they
    were read on, and for a crosscoder their activations), else ``site`` or the top-divergence layer's
    residual stream; checked against the model before any sampling."""
    if shifts is not None:
        if completions is None or (crosscoder is not None and shifts.activations is None):
            raise IrmscopeError(
                "word shifts read already need the completions they were read on (and, for a "
                "crosscoder, the activations read with them)"
            )
        site = shifts.activations.site if shifts.activations is not None else site
    if crosscoder is None:
        return site
    site = site or divergence_site(tuned, base)
    resolve_site(base.model, site)
    return site


def _completion_pair(
    tuned: LoadedModel,
    base: LoadedModel,
    prompts: Sequence[str],
    completions: tuple[Sequence[str], Sequence[str]] | None,
    sampling: Sampling,
) -> tuple[list[str], list[str]]:
    """The base and tuned completions of every prompt: the ``completions`` given (checked to be one of
    each per prompt, since the audit pairs them by prompt), or sampled from both models with ``sampling``."""
    if completions is None:
        return (
            sampling.complete(base, prompts, desc="base completions"),
            sampling.complete(tuned, prompts, desc="tuned completions"),
        )
    base_completions, tuned_completions = (list(c) for c in completions)
    if not len(base_completions) == len(tuned_completions) == len(prompts):
        raise IrmscopeError("give one base and one tuned completion per prompt")
    return base_completions, tuned_completions


def _top_called(
    beyond: np.ndarray, rewarded: np.ndarray, penalised: np.ndarray, top: int
) -> tuple[list, list]:
    """The ``top`` rewarded and ``top`` penalised words' indices, ranked by the relative shift beyond the
    drift of words of their frequency, so a frequent word's small relative drift does not lead."""
    order = np.argsort(-beyond, kind="stable")
    return [i for i in order if rewarded[i]][:top], [i for i in order[::-1] if penalised[i]][:top]


def _check_pair(tuned: LoadedModel, base: LoadedModel, prompts: Sequence[str]) -> None:
    """Refuse, before any sampling, what would make the audit meaningless: a noise floor needs at least
    two prompts, and a per-word shift compares token probabilities, so both models must share a vocabulary."""
    if len(prompts) < 2:
        raise IrmscopeError(f"the audit needs at least 2 prompts to measure noise, got {len(prompts)}")
    if tuned.tokenizer.get_vocab() != base.tokenizer.get_vocab():
        raise IrmscopeError(
            "the tuned and base models have different tokenizers; audit a model against its base"
        )


def _call_words(
    words: list[str], shifts: Any, *, q: float, n_resamples: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]:
    """Every word's table (see :func:`_word_table`), the noise floor it was called against, and the masks of
    the words called rewarded and penalised. The floor compares each word's relative shift with the drift
    of words of its base-model frequency, with one degree of freedom fewer than the prompts."""
    effect, se = relative_shift(shifts.statistic, shifts.base_count, shifts.uniform_count)
    n_prompts = shifts.base_count.shape[0]
    floor = noise_floor(effect, se, shifts.base_count.mean(0), df=n_prompts - 1, q=q)
    table = _word_table(words, shifts, effect, floor, n_resamples=n_resamples, seed=seed)
    return table, floor, *called_words(table)


def _word_table(
    words: list[str], shifts: Any, effect: np.ndarray, floor: dict[str, Any], *, n_resamples: int, seed: int
) -> dict[str, Any]:
    """Every word's columns, one array each: the shifts with their bootstrap intervals and the floor's
    statistics. Kept as one table so the report, the CSV and the called rows all read the same numbers."""
    boot = dict(n_resamples=n_resamples, seed=seed)
    ratio = (shifts.base_count, shifts.uniform_count)
    rel_low, rel_high = bootstrap_intervals(shifts.statistic, denominator=ratio, **boot)
    ec_low, ec_high = bootstrap_intervals(shifts.expected_count, **boot)
    lr_low, lr_high = bootstrap_intervals(shifts.log_ratio, **boot)
    return {
        "word": words,
        "relative_shift": effect,
        "relative_low": rel_low,
        "relative_high": rel_high,
        "beyond_drift": floor["beyond"],
        "expected_count_shift": shifts.expected_count.mean(0),
        "expected_count_low": ec_low,
        "expected_count_high": ec_high,
        "mean_log_ratio": shifts.log_ratio.mean(0),
        "mean_log_ratio_low": lr_low,
        "mean_log_ratio_high": lr_high,
        "base_count": shifts.base_count.mean(0),
        "z": floor["z"],
        "p": floor["p"],
        "q_value": floor["q"],
        "called": floor["called"],
    }


def _floor_summary(
    table: dict[str, Any], floor: dict[str, Any], rewarded: Any, penalised: Any, *, q: float, eps: float
) -> dict[str, Any]:
    """How many words the floor called, each way, how many of them may be false at level ``q``, and the
    empirical null they were tested against."""
    called = floor["called"]
    return {
        "q": q,
        "uniform_count": eps,
        "null": floor["null"],
        "n_called": int(called.sum()),
        "n_rewarded": int(rewarded.sum()),
        "n_penalised": int(penalised.sum()),
        "expected_false_at_most": q * int(called.sum()),
        "largest_p_called": float(table["p"][called].max()) if called.any() else None,
    }


class _Rows:
    """Turns word indices into report rows: the table's columns plus how often the word appeared in each
    model's completions, so a called word can be checked against what the models actually wrote."""

    def __init__(self, words: list[str], table: dict[str, Any], counts: dict[str, Any], total: float):
        self.words, self.table, self.counts, self.total = words, table, counts, total

    def __call__(self, indices) -> list[dict[str, Any]]:
        counts, total = self.counts, self.total
        out = []
        for i in indices:
            word = self.words[i]
            delta = counts["tuned"].get(word, 0) - counts["base"].get(word, 0)
            out.append(
                {
                    **{key: _plain(column[i]) for key, column in self.table.items() if key != "called"},
                    "base_completion_count": counts["base"].get(word, 0),
                    "tuned_completion_count": counts["tuned"].get(word, 0),
                    "completion_share": delta / total if total else 0.0,
                }
            )
        return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def elicited_lexicon(table: dict[str, Any]) -> Lexicon | None:
    """The called words with their relative shifts beyond the drift of words of their frequency
    (``beyond_drift``) scaled so the largest magnitude is :data:`EXPORT_RANGE` (values rounded to 3
    decimals; words that round to 0 are left out), or None when no word is called."""
    called = np.flatnonzero(table["called"])
    if not len(called):
        return None
    shift = table["beyond_drift"][called]
    scale = np.abs(shift).max()
    values = np.round(EXPORT_RANGE * shift / scale, 3) if scale > 0 else np.zeros_like(shift)
    entries = [(table["word"][i], float(v)) for i, v in zip(called, values, strict=True) if v != 0]
    return Lexicon(entries, source="irmscope audit") if entries else None


def read_table(path: Path) -> dict[str, Any]:
    """An audit's ``words.csv`` back as its table (:func:`~irmscope.audit.compare.compare_table` compares
    it with a lexicon again): the words as strings (a word such as "nan" or "True" stays a word),
    ``called`` as booleans, every other column as a float array."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    missing = set(TABLE_COLUMNS) - set(rows[0] if rows else ())
    if not rows or rows[0][:1] != ["word"] or missing:
        raise IrmscopeError(
            f"{path} is not an audit's words.csv (it needs the columns {', '.join(TABLE_COLUMNS)}): give "
            "the words.csv that irmscope audit wrote"
        )
    if any(len(row) != len(rows[0]) for row in rows[1:]):
        raise IrmscopeError(f"{path} has rows of another length than its header: it was cut or edited")
    header, columns = rows[0], list(zip(*rows[1:], strict=True)) or [()] * len(rows[0])
    table: dict[str, Any] = {}
    for name, column in zip(header, columns, strict=True):
        if name == "word":
            table[name] = list(column)
        elif name == "called":
            table[name] = np.array([value == "True" for value in column], dtype=bool)
        else:
            table[name] = np.array(column, dtype=float)
    return table


def _table_csv(table: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(table))
    writer.writerows(
        zip(
            *(column.tolist() if hasattr(column, "tolist") else column for column in table.values()),
            strict=True,
        )
    )
    return buffer.getvalue()


def write_audit(
    out: Path,
    result: dict[str, Any],
    table: dict[str, Any],
    *,
    crosscoder: Crosscoder | None = None,
    seed: int = 0,
) -> None:
    """Write ``elicited.tsv`` and its control ``elicited-shuffled.tsv`` (the same words with their values
    shuffled by ``seed``: tuning against it shows what any reward on these words gives), or remove earlier
    ones when no word is called; the ``crosscoder`` (if any) under ``crosscoder/``, or remove an earlier
    one; then ``words.csv`` and ``audit.json`` into ``out``, recording the export in ``result``."""
    out.mkdir(parents=True, exist_ok=True)
    if crosscoder is not None:
        save_crosscoder(crosscoder, out / CROSSCODER_DIR, {"site": result["inside"]["site"]})
        result["inside"]["folder"] = CROSSCODER_DIR  # relative to the audit's folder, which may move
    elif (out / CROSSCODER_DIR).exists():
        shutil.rmtree(out / CROSSCODER_DIR)  # an earlier audit's crosscoder must not pass for this one's
    exported = elicited_lexicon(table)
    # recorded relative to the audit's folder, which may move (a pipeline stage writes in a work folder
    # that is renamed when it finishes)
    files = {"file": "elicited.tsv", "shuffled_file": "elicited-shuffled.tsv"}
    for key, name in files.items():
        if exported is not None:
            (exported if key == "file" else exported.shuffled(seed)).to_tsv(out / name)
        elif (out / name).exists():
            (out / name).unlink()  # an earlier audit's export must not pass for this one's
    result["export"] = None if exported is None else {**files, "n_words": len(exported)}
    text = _table_csv(table)
    atomic_write(out / "words.csv", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_json(out / "audit.json", result)


def run_audit(
    *,
    tuned: str,
    base: str,
    out: str | Path,
    data: str = "rotten-tomatoes",
    reward: str | None = None,
    n_prompts: int = 200,
    completion_tokens: int = 32,
    prefix_tokens: int = 30,
    crosscoder: CrosscoderConfig | None = None,
    site: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    page_writer: Callable[[Path, dict[str, Any]], Path] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit ``tuned`` against ``base`` on ``n_prompts`` held-out review prefixes (test split of
    ``data``) and write the outputs under ``out`` (see the module docstring). Inputs are checked first."""
    from irmscope.data import load_reviews, truncate_to_prefixes
    from irmscope.models.loading import load_model
    from irmscope.rewards import load_reward

    out = check_output(out, overwrite, "folder")
    for name, value, least in (("--n-prompts", n_prompts, 2), ("--completion-tokens", completion_tokens, 1)):
        if value < least:
            raise IrmscopeError(f"{name} must be at least {least}, not {value}")
    lexicon = lexicon_of(load_reward(reward)) if reward is not None else None
    if site is not None:
        parse_site(site)  # a malformed site is refused before any model loads
    with output_lock(out, AUDIT_FOLDER):
        texts = list(load_reviews(data, split="test", seed=seed)["text"])
        base_lm = load_model(base, seed=seed)
        tuned_lm = load_model(tuned, seed=seed)
        prompts = truncate_to_prefixes(texts, base_lm.tokenizer, prefix_tokens, limit=n_prompts)
        if len(prompts) < 2:
            raise IrmscopeError(
                f"fewer than 2 test texts of {data} have {prefix_tokens} tokens; give more data"
            )
        result = audit(
            tuned_lm,
            base_lm,
            prompts,
            lexicon=lexicon,
            completion_tokens=completion_tokens,
            crosscoder=crosscoder,
            site=site,
            seed=seed,
            progress=progress,
        )
        table, coder = result.pop("table"), result.pop("crosscoder")
        result["settings"] = {
            "tuned": tuned,
            "base": base,
            "data": data,
            "reward": reward,
            "n_prompts": n_prompts,
            "completion_tokens": completion_tokens,
            "prefix_tokens": prefix_tokens,
            "site": result["inside"]["site"] if result["inside"] else None,
            "seed": seed,
        }
        write_audit(out, result, table, crosscoder=coder, seed=seed)
        if page_writer is not None:
            result["page"] = str(page_writer(out, result))
    return result
