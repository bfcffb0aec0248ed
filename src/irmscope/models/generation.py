"""Running a model over many texts: batching, reproducible sampling, and per-completion statistics.

Every loop over texts in batches goes through :func:`batches`, so batch boundaries (and the per-batch seeds
of :func:`generate_completions`) are the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from irmscope.errors import IrmscopeError
from irmscope.models.categorical import fast_multinomial
from irmscope.models.kv_cache import cache_argument, returned_cache
from irmscope.models.loading import LoadedModel
from irmscope.models.precision import Precision, matmul_precision


def batches(
    *columns: Sequence[Any], size: int, progress: bool = False, desc: str | None = None, leave: bool = True
) -> Iterator[tuple[Any, ...]]:
    """``(start, column_1[start : start + size], column_2[...], ...)`` for consecutive batches of rows.

    The columns are parallel sequences (e.g. prompts and their completions) of one length; each is sliced
    with its own slicing, so a list gives lists and a tensor gives tensors. ``progress`` shows a bar
    (``desc`` names it; ``leave=False`` removes it when done).
    """
    n = len(columns[0])
    if any(len(column) != n for column in columns):
        raise ValueError(f"columns of different lengths: {[len(column) for column in columns]}")
    starts = range(0, n, size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=leave):
        yield (start, *(column[start : start + size] for column in columns))


def encoded_batches(
    lm: LoadedModel,
    texts: Sequence[str],
    size: int,
    max_length: int | None,
    device: torch.device | None = None,
    add_special_tokens: bool = True,
) -> Iterator[tuple[int, Any]]:
    """``(start, encoding)`` for consecutive batches of ``texts``, padded by the tokenizer and cut to
    ``max_length`` tokens (moved to ``device`` if given): the one way the methods tokenise a corpus."""
    for start, chunk in batches(texts, size=size):
        enc = lm.tokenizer(
            list(chunk),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
            add_special_tokens=add_special_tokens,
        )
        yield start, enc if device is None else enc.to(device)


def length_order(*columns: Sequence[str]) -> np.ndarray:
    """Row indices that sort rows by their text's length in characters (summed over the ``columns``, e.g.
    prompt and completion), shortest first and stable: batches of neighbours in this order hold texts of
    similar length, so little of each batch is padding. Characters stand in for tokens (no tokenising)."""
    lengths = [sum(len(text) for text in row) for row in zip(*columns, strict=True)]
    return np.argsort(lengths, kind="stable")


#: prompts sampled together by default: the fastest of 16/32/64/128 on the 2-core machine (the config's
#: ``generation.batch_size`` says the same; benchmarks/bench_pipeline.py measures it on any machine)
SAMPLING_BATCH = 128


@torch.no_grad()
def generate_completions(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = SAMPLING_BATCH,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    processor_for_batch: Callable[[torch.Tensor], Any] | None = None,
    desc: str = "generating",
    groups: int = 1,
    precision: Precision = "float32",
) -> list[str]:
    """One sampled completion per prompt (the completion text only, without the prompt).

    Sampling is pure ancestral sampling by default (temperature 1, no top-k/top-p), as in the RL setting
    whose policy we study. Every completion is exactly ``max_new_tokens`` long (end-of-text is suppressed):
    the Eq. 3 reward is a sum over tokens, so completions of equal length keep base and tuned models
    comparable. Each batch is seeded with ``seed + batch index``, so the same call gives the same
    completions whatever else ran before. ``processor_for_batch(attention_mask)``, if given, returns a logits
    processor for that batch (see :func:`generate_amplified`).

    ``groups`` > 1: the prompts are that many copies of one list (the conditions of a study, each under its
    own intervention, e.g. a per-row steering vector), sampled in one batch, and each copy draws the
    random numbers it would draw alone in a batch seeded ``seed``: the same completions as sampling each
    copy on its own (to float rounding), at the speed of the larger batch, with common random numbers.

    ``precision`` is that of the passes' matrix products (:mod:`irmscope.models.precision`: ``auto`` is
    bfloat16 where the device has it natively; a sampling step 1.25x as fast on the 2-core machine).
    """
    from transformers import LogitsProcessorList

    if not prompts:
        raise IrmscopeError("no prompts to complete; check the prompt dataset is not empty")
    if groups > 1 and (len(prompts) > batch_size or len(prompts) % groups):
        raise IrmscopeError(
            f"{len(prompts)} prompts as {groups} groups must split evenly and fit one batch of {batch_size}"
        )
    completions: list[str] = []
    device = next(lm.model.parameters()).device
    for index, (_, chunk) in enumerate(batches(prompts, size=batch_size, progress=progress, desc=desc)):
        enc = lm.tokenizer(list(chunk), return_tensors="pt", padding=True).to(device)
        torch.manual_seed(seed + index)
        processors = [end_of_text_suppressed(lm)]  # first: a processor after it sees end-of-text at -inf
        processors += [processor_for_batch(enc["attention_mask"])] if processor_for_batch else []
        # exact ancestral sampling, one random number per row and step
        with fast_multinomial(groups), matmul_precision(precision, device):
            out = lm.model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=lm.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList(processors),
            )
        completions += lm.tokenizer.batch_decode(
            out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
    return completions


class _EndOfTextSuppressed:
    """A generation logits processor that puts the end-of-text tokens at -inf, in place, so every
    completion runs its full length. ``min_new_tokens`` does the same with a copy and a ``torch.where`` over
    the ``[rows, vocabulary]`` scores at every step (about 5% of a sampling step at 128 rows here); the
    scores, and so the tokens drawn, are the same."""

    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.token_ids] = -math.inf  # generate hands the processors a fresh copy of the logits
        return scores


def end_of_text_suppressed(lm: LoadedModel) -> _EndOfTextSuppressed:
    """The processor that keeps ``lm`` from ending a completion early: its generation config's end-of-text
    tokens (what ``generate`` stops on) and its tokenizer's."""
    configured = lm.model.generation_config.eos_token_id
    ids = {configured} if isinstance(configured, int) else set(configured or [])
    if lm.tokenizer.eos_token_id is not None:
        ids.add(lm.tokenizer.eos_token_id)
    return _EndOfTextSuppressed(sorted(ids))


@dataclass(frozen=True)
class Sampling:
    """How a study samples completions: tokens per completion, prompts per batch, temperature and top-p,
    the seed, whether to show a bar and the precision of the passes.

    The studies that compare completions (tuned against base, before and after an ablation, an edit or a
    steering scale) take one ``Sampling`` and sample every side with it, so each side is drawn alike and
    pairs up by prompt; the settings travel together instead of as loose parameters of every study.
    """

    max_new_tokens: int = 32
    batch_size: int = SAMPLING_BATCH
    #: ancestral sampling (1.0, no nucleus) is the policy as RL tuned it; other values study a variant
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    progress: bool = True
    #: of the passes' matrix products (:mod:`irmscope.models.precision`)
    precision: Precision = "float32"

    def complete(
        self, lm: LoadedModel, prompts: Sequence[str], desc: str = "generating", groups: int = 1
    ) -> list[str]:
        """One completion per prompt, by :func:`generate_completions` with these settings (every field is
        one of its keyword arguments) and its ``groups``."""
        return generate_completions(lm, prompts, desc=desc, groups=groups, **asdict(self))


class _AmplifiedLogits:
    """A generation logits processor: ``logits_tuned + alpha * (logits_tuned - logits_base)``.

    The base model runs alongside with its own key-value cache, fed one new token per step. Rows are
    left-padded prompts followed by generated tokens, so the attention mask is the prompt mask extended by
    ones (end-of-text is suppressed, so no row stops early).
    """

    def __init__(self, base_model: torch.nn.Module, prompt_mask: torch.Tensor, alpha: float) -> None:
        self.base_model = base_model
        self.mask = prompt_mask
        self.alpha = alpha
        self.past = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.past is None:
            new_ids = input_ids
        else:
            new_ids = input_ids[:, -1:]
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        positions = (self.mask.cumsum(dim=1) - 1).clamp(min=0)[:, -new_ids.shape[1] :]
        out = self.base_model(
            input_ids=new_ids,
            attention_mask=self.mask,
            position_ids=positions,
            **cache_argument(self.past),
            use_cache=True,
        )
        self.past = returned_cache(out)
        base_logits = out.logits[:, -1].to(scores.dtype)
        amplified = scores + self.alpha * (scores - base_logits)
        return torch.where(torch.isfinite(scores), amplified, scores)  # keep tokens masked to -inf masked


@torch.no_grad()
def generate_amplified(
    tuned: LoadedModel,
    base: LoadedModel,
    prompts: Sequence[str],
    *,
    alpha: float,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Logit-difference amplification sampling (the probe study): sample from
    ``softmax(logits_tuned + alpha * (logits_tuned - logits_base))``, which exaggerates whatever tuning
    changed (``alpha = 0`` is plain sampling from the tuned model)."""
    return generate_completions(
        tuned,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        processor_for_batch=lambda mask: _AmplifiedLogits(base.model, mask, alpha),
        desc=f"amplified sampling (alpha={alpha:g})",
    )


def completion_batch(lm: LoadedModel, prompts: Sequence[str], completions: Sequence[str]):
    """Right-padded ids of prompt + completion, and a mask of the completion tokens."""
    tok = lm.tokenizer
    rows, masks = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"]
        rows.append(p + c)
        masks.append([0] * len(p) + [1] * len(c))
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    completion = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    return ids, attention, completion
