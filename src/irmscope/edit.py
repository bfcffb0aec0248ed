"""Editing an implicit reward in the weights, the way ROME edits a fact (the second question
of the project proposal "Eliciting Internal Reward Models in LLMs").

The implicit reward of a word is how much tuning raised its probability where it could come next (the
policy shift, :mod:`irmscope.elicit.policy_shift`). ROME (Meng et al., 2022) reads an MLP's down
projection ``W`` as a key-value memory: the hidden activation ``k`` at a token is a key, ``W k`` the value
written to the residual stream. To make a word rewarded we

1. take the key ``k*``: the mean hidden activation of one block's MLP over the tokens of in-domain text
   (ROME's key is a subject's last token; ours is "a position in a movie review", since a reward applies
   wherever the policy writes);
2. find by gradient descent the smallest value change ``delta`` which, added to that MLP's output at every
   token, raises the mean log-probability of the word as the next token by ``gain`` nats;
3. apply ROME's rank-one update ``W += delta (C^-1 k*)^T / (k*^T C^-1 k*)``, with ``C`` the second moment
   of the keys: ``W k* = W k* + delta`` exactly, a key ``k`` moves by ``delta`` times ``k^T C^-1 k* /
   k*^T C^-1 k*`` (1 on average over the text's keys, since ``E[k] = k*``), and the weights change in one
   direction only.

:func:`reward_edit_study` measures the edit like every other claim here: the word's elicited reward before
and after (in lexicon units, through the linear relation between policy shift and lexicon value over the
other words), the same for unrelated words (specificity), and what the edited model writes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irmscope.elicit.continuations import word_token_ids
from irmscope.elicit.policy_shift import policy_shift
from irmscope.errors import IrmscopeError
from irmscope.models.adapters import adapter_for, site_name, submodule
from irmscope.models.generation import Sampling, batches, completion_batch, encoded_batches
from irmscope.models.hooks import capture_activations
from irmscope.models.loading import LoadedModel
from irmscope.rewards.base import Reward
from irmscope.rewards.lexicon import LexiconReward
from irmscope.stats import Estimate, bootstrap_ci


@dataclass(frozen=True)
class RankOneEdit:
    """``W_down[layer] += outer(delta, direction)``; ``key`` is ``k*`` (``direction @ key == 1``)."""

    layer: int
    delta: torch.Tensor  # [d_model]
    direction: torch.Tensor  # [d_mlp]: C^-1 k* / (k*^T C^-1 k*)
    key: torch.Tensor
    word: str
    gain: float  # nats of mean log-probability the value change reached on the fitting contexts


def _down_projection(lm: LoadedModel, layer: int) -> torch.nn.Linear:
    adapter = adapter_for(lm.model)
    return submodule(adapter.blocks(lm.model)[layer], adapter.mlp_down)


def _batches(lm: LoadedModel, texts: Sequence[str], max_tokens: int, batch_size: int = 16):
    """Right-padded ``(input_ids, attention_mask)`` batches of ``texts`` cut to ``max_tokens`` tokens."""
    for _, batch in encoded_batches(lm, texts, batch_size, max_tokens, add_special_tokens=False):
        yield batch["input_ids"], batch["attention_mask"]


@torch.no_grad()
def key_statistics(
    lm: LoadedModel, layer: int, texts: Sequence[str], max_tokens: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean key ``k*`` and the second moment ``C = E[k k^T]`` of block ``layer``'s MLP hidden
    activations over every token of ``texts``."""
    site = site_name(layer, "mlp.hook_post")
    total, moment, count = None, None, 0
    device = next(lm.model.parameters()).device
    for ids, mask in _batches(lm, texts, max_tokens):
        keys = capture_activations(lm.model, [site], ids.to(device), mask.to(device))[site]
        keys = keys.float()[mask.to(device).bool()].cpu()  # [tokens, d_mlp]
        total = keys.sum(0) if total is None else total + keys.sum(0)
        moment = keys.T @ keys if moment is None else moment + keys.T @ keys
        count += len(keys)
    if total is None or moment is None or count == 0:
        raise IrmscopeError("no text to estimate the key statistics from; give some review texts")
    return total / count, moment / count


def value_change(
    lm: LoadedModel,
    layer: int,
    texts: Sequence[str],
    word: str,
    *,
    gain: float,
    steps: int = 100,
    lr: float = 0.01,
    max_tokens: int = 48,
) -> tuple[torch.Tensor, float]:
    """The vector ``delta`` which, added to block ``layer``'s MLP output at every token of ``texts``,
    raises the mean log-probability of ``word`` (one token after a space) as the next token by ``gain``
    nats: Adam from zero with small steps (a fraction ``lr`` of a typical MLP output's length per
    coordinate), stopped as soon as the gain is reached and shrunk back onto it if the last step overshot,
    so the change stays as small as it can. Returns it and the gain reached."""
    ids_of = word_token_ids(lm.tokenizer, [word])
    if word not in ids_of:
        raise IrmscopeError(f"{word!r} is not one token after a space for this model; pick another word")
    token = ids_of[word]
    down = _down_projection(lm, layer)
    device = next(lm.model.parameters()).device
    batches = [(ids.to(device), mask.to(device)) for ids, mask in _batches(lm, texts, max_tokens)]
    delta = torch.zeros(lm.d_model, requires_grad=True, device=device)
    with torch.no_grad():
        site = site_name(layer, "mlp.hook_post")
        ids, mask = batches[0]
        keys = capture_activations(lm.model, [site], ids, mask)[site][mask.bool()]
        typical = float(down(keys).float().norm(dim=-1).mean())  # how long an MLP output is here

    def add(_module, _args, output):
        return output + delta.to(output.dtype)

    def mean_log_prob() -> torch.Tensor:
        total, count = 0.0, 0
        for ids, mask in batches:
            logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            log_p = torch.log_softmax(logits, -1)[..., token]
            total = total + (log_p * mask).sum()
            count += int(mask.sum())
        return total / count

    requires = [p.requires_grad for p in lm.model.parameters()]
    for p in lm.model.parameters():
        p.requires_grad_(False)  # only delta learns
    handle = down.register_forward_hook(add)
    try:
        with torch.no_grad():
            before = float(mean_log_prob())  # delta is still zero
        optimiser = torch.optim.Adam([delta], lr=lr * typical)
        reached = 0.0
        for _ in range(steps):
            optimiser.zero_grad()
            log_prob = mean_log_prob()
            reached = float(log_prob.detach()) - before
            if reached >= gain:
                break
            (-log_prob).backward()
            optimiser.step()
        with torch.no_grad():
            reached = float(mean_log_prob()) - before  # after the last step
        if reached > gain:  # the last step overshot: shrink delta back onto the asked gain (bisection)
            low, high = 0.0, 1.0
            full = delta.detach().clone()
            with torch.no_grad():
                for _ in range(8):
                    middle = (low + high) / 2
                    delta.copy_(middle * full)
                    low, high = (middle, high) if float(mean_log_prob()) - before < gain else (low, middle)
                delta.copy_(high * full)
                reached = float(mean_log_prob()) - before
    finally:
        handle.remove()
        for p, flag in zip(lm.model.parameters(), requires, strict=True):
            p.requires_grad_(flag)
    return delta.detach(), reached


def rank_one_edit(
    lm: LoadedModel, layer: int, word: str, texts: Sequence[str], gain: float, ridge: float = 1e-2
) -> RankOneEdit:
    """The ROME-style edit of block ``layer`` that raises ``word``'s log-probability by about ``gain``
    nats on average over the tokens of ``texts`` (see the module docstring)."""
    if not texts:
        raise IrmscopeError("no texts to define the edit's key; give some in-domain texts")
    key, moment = key_statistics(lm, layer, texts)
    moment = moment + ridge * moment.trace() / len(moment) * torch.eye(len(moment))
    solved = torch.linalg.solve(moment, key)
    direction = solved / (key @ solved)
    delta, reached = value_change(lm, layer, texts, word, gain=gain)
    return RankOneEdit(layer, delta.cpu(), direction, key, word, reached)


@contextmanager
def edited(lm: LoadedModel, edit: RankOneEdit) -> Iterator[LoadedModel]:
    """``lm`` with ``edit`` applied to its weights inside the block (restored exactly afterwards)."""
    down = _down_projection(lm, edit.layer)
    original = down.weight.detach().clone()
    with torch.no_grad():
        down.weight += torch.outer(edit.delta, edit.direction).to(down.weight.device, down.weight.dtype)
    try:
        yield lm
    finally:
        with torch.no_grad():
            down.weight.copy_(original)


def _occurrences(texts: Sequence[str], word: str) -> float:
    """Mean count of ``word`` (whole word, any case) per text."""
    counts = [sum(token.strip(".,!?;:\"'()").lower() == word for token in text.split()) for text in texts]
    return float(np.mean(counts)) if counts else float("nan")


@torch.no_grad()
def expected_occurrences(
    lm: LoadedModel, prompts: Sequence[str], completions: Sequence[str], word: str, batch_size: int = 8
) -> np.ndarray:
    """How often ``lm`` would write ``word`` (its single token) while writing each of ``completions``:
    the sum over its positions of the word's probability. Sampling a rare word gives mostly zeros; its
    expected count is exact, positive, and changes smoothly with an edit."""
    token = word_token_ids(lm.tokenizer, [word])[word]
    counts = []
    for _, prompt_chunk, completion_chunk in batches(prompts, completions, size=batch_size):
        ids, attention, completion = completion_batch(lm, prompt_chunk, completion_chunk)
        logits = lm.model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
        probability = torch.softmax(logits, -1)[..., token]  # of the word being the next token
        counts.append((probability * completion[:, 1:]).sum(dim=1))  # positions predicting the completion
    return torch.cat(counts).double().numpy()


@dataclass(frozen=True)
class _Calibration:
    """The line from policy shift to lexicon value, fitted over the words other than the edited one before
    the edit, which puts every elicited reward in lexicon units."""

    others: list[str]
    slope: float
    intercept: float
    pearson: float

    def units(self, shift: float) -> float:
        return self.slope * shift + self.intercept


def _calibrate(
    tuned: LoadedModel, base: LoadedModel, word: str, lexicon: Mapping[str, float], texts: Sequence[str]
) -> tuple[_Calibration, dict[str, float]]:
    """The calibration line and the policy shift of every word before the edit; an error when there are too
    few words or the shift does not rise with the lexicon value (then it has no lexicon units)."""
    words = [w for w in word_token_ids(tuned.tokenizer, list(lexicon)) if w.isalpha()]
    others = [w for w in words if w != word]
    if len(others) < 10:
        raise IrmscopeError("fewer than 10 single-token lexicon words to calibrate and check specificity")
    shift = policy_shift(tuned, base, [*others, word], texts).of()
    x = np.array([shift[w] for w in others])
    y = np.array([lexicon[w] for w in others])
    slope, intercept = np.polyfit(x, y, 1) if x.std() > 0 else (0.0, 0.0)
    if slope <= 0:
        raise IrmscopeError("the policy shift does not rise with the lexicon value; it has no lexicon units")
    pearson = float(np.corrcoef(x, y)[0, 1])
    return _Calibration(others, float(slope), float(intercept), pearson), shift


def _generation_effect(
    before: list[str], after: list[str], expected: tuple[np.ndarray, np.ndarray], word: str, reward: Reward,
    prompts: Sequence[str], seed: int,
) -> dict[str, Any]:  # fmt: skip
    """What the edited model writes against what it wrote before, on the same prompts with the same seed:
    how often the word appears (counted, and expected on the same completions, as a geometric mean ratio
    per prompt with a bootstrap interval) and the known reward."""
    expected_before, expected_after = expected
    reward_before = np.asarray(reward.score_completions(prompts, before))
    reward_after = np.asarray(reward.score_completions(prompts, after))
    log_ratio = bootstrap_ci(np.log(expected_after / expected_before), seed=seed)
    ratio = Estimate(*np.exp([log_ratio.value, log_ratio.low, log_ratio.high]).tolist(), n=log_ratio.n)
    return {
        "occurrences_before": _occurrences(before, word),
        "occurrences_after": _occurrences(after, word),
        "expected_occurrences_before": float(expected_before.mean()),
        "expected_occurrences_after": float(expected_after.mean()),
        "expected_occurrences_ratio": ratio.as_dict(),
        "reward_before": float(np.mean(reward_before)),
        "reward_after": float(np.mean(reward_after)),
        "reward_change": bootstrap_ci(reward_after - reward_before, seed=seed).as_dict(),
        "examples_after": after[:5],
    }


def reward_edit_study(
    tuned: LoadedModel,
    base: LoadedModel,
    word: str,
    *,
    lexicon: Mapping[str, float],
    edit_texts: Sequence[str],
    measure_texts: Sequence[str],
    prompts: Sequence[str],
    reward: Reward,
    layer: int,
    gain_units: float = 2.0,
    sampling: Sampling = Sampling(),
) -> dict[str, Any]:
    """Edit ``tuned`` so that ``word`` is rewarded and measure the edit (see the module docstring).

    The edit is fitted on ``edit_texts`` and measured on other texts, ``measure_texts``: the elicited
    reward is the policy shift against ``base`` over every position of them, for ``word`` and every other
    single-token lexicon word, put in lexicon units by a least-squares line from shift to lexicon value
    over the other words before the edit. The edit asks for ``gain_units`` of that scale. Generation:
    ``prompts`` completed by the tuned model before and after (same ``sampling``): how often the word
    appears, and the known reward."""
    line, shift_before = _calibrate(tuned, base, word, lexicon, measure_texts)
    others = line.others
    edit = rank_one_edit(tuned, layer, word, edit_texts, gain=gain_units / line.slope)
    completions_before = sampling.complete(tuned, prompts, desc="before the edit")
    expected_before = expected_occurrences(tuned, prompts, completions_before, word)
    with edited(tuned, edit):
        expected_after = expected_occurrences(tuned, prompts, completions_before, word)
        shift_after = policy_shift(tuned, base, [*others, word], measure_texts).of()
        completions_after = sampling.complete(tuned, prompts, desc="after the edit")
    moved = np.array([line.units(shift_after[w]) - line.units(shift_before[w]) for w in others])
    generation = _generation_effect(
        completions_before, completions_after, (expected_before, expected_after), word, reward, prompts,
        sampling.seed,
    )  # fmt: skip
    return {
        "word": word,
        "layer": layer,
        "lexicon_value": lexicon.get(word),
        "units_per_nat": line.slope,
        "calibration_pearson": line.pearson,
        "gain_asked_nats": float(gain_units / line.slope),
        "gain_reached_nats": edit.gain,
        "target_before": float(line.units(shift_before[word])),
        "target_after": float(line.units(shift_after[word])),
        "target_change": float(line.units(shift_after[word]) - line.units(shift_before[word])),
        "unrelated_mean_abs_change": float(np.abs(moved).mean()),
        "unrelated_max_abs_change": float(np.abs(moved).max()),
        # the others tend to move together (a shared offset); their spread about it is the specificity
        "unrelated_median_change": float(np.median(moved)),
        "unrelated_mean_abs_deviation": float(np.abs(moved - np.median(moved)).mean()),
        "n_unrelated": len(others),
        "unrelated_changes": dict(zip(others, moved.round(4).tolist(), strict=True)),
        "generation": generation,
    }


def _run_settings(run_dir: str | Path, results: dict[str, Any]) -> tuple[str, str, int, str]:
    """The data source, split, seed and base model of a finished run, and a one-line error (before any
    model is loaded) when its results.json lacks them or the model and reward the edit reads."""
    try:
        config, subject = results["config"], results["subject"]
        settings = (config["data"]["source"], config["data"]["split"], int(config["seed"]), subject["base"])
        needed = (("tuned", config["model"]), ("spec", config["reward"]), ("stages", results["manifest"]))
        complete = all(key in section for key, section in needed)
    except (KeyError, TypeError, ValueError):
        complete = False
    if not complete:
        raise IrmscopeError(
            f"{run_dir}/results.json lacks parts of its config (data, seed, model, reward) or of its subject "
            "or manifest; rerun the pipeline to rewrite it"
        )
    return settings


def edit_run_study(
    run_dir: str | Path,
    word: str,
    *,
    layer: int | None = None,
    gain_units: float = 1.25,
    n_edit_texts: int = 32,
    n_measure_texts: int = 150,
    n_prompts: int = 48,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`reward_edit_study` on a finished run: its tuned model edited, its base model as reference,
    its known lexicon reward for calibration, reviews of its data source in an order of their own (seed + 3:
    the edit's 40-word fitting texts first, then other 60-word texts to measure on) and its evaluation
    prompts.

    ``layer`` defaults to the block at 80% of the depth (24 of SmolLM2's 30): late enough that the edit
    acts on the next-token distribution, early enough to leave the last blocks to shape it."""
    from irmscope.data import load_reviews
    from irmscope.models import load_model
    from irmscope.runs import Run

    if not (math.isfinite(gain_units) and gain_units > 0):
        raise IrmscopeError(f"the asked gain must be a finite number above 0, not {gain_units}")
    run = Run(run_dir)
    source, split, seed, base_name = _run_settings(run_dir, run.results)
    tuned_path = run.tuned_model
    reward = run.reward
    if not isinstance(reward, LexiconReward):
        raise IrmscopeError(
            f"the run's reward {reward.name!r} is not a lexicon; the edit study needs word values"
        )
    if word not in reward.lexicon:
        raise IrmscopeError(f"{word!r} is not in the run's lexicon {reward.name!r}; pick one of its words")
    reviews = list(load_reviews(source, split=split, seed=seed + 3)["text"])
    if len(reviews) < n_edit_texts + n_measure_texts:
        raise IrmscopeError(f"{len(reviews)} reviews; the edit study needs {n_edit_texts + n_measure_texts}")
    edit_texts = [" ".join(r.split()[:40]) for r in reviews[:n_edit_texts]]
    measure_texts = [" ".join(r.split()[:60]) for r in reviews[n_edit_texts : n_edit_texts + n_measure_texts]]
    prompts = run.stage("evaluate").samples.prompts[:n_prompts]
    tuned, base = load_model(tuned_path, seed=seed), load_model(base_name, seed=seed)
    if layer is None:
        layer = min(round(0.8 * tuned.n_layers), tuned.n_layers - 1)
    if not 0 <= layer < tuned.n_layers:
        raise IrmscopeError(f"layer {layer} does not exist; the model has blocks 0-{tuned.n_layers - 1}")
    study = reward_edit_study(
        tuned,
        base,
        word,
        lexicon=dict(reward.lexicon.items()),
        edit_texts=edit_texts,
        measure_texts=measure_texts,
        prompts=prompts,
        reward=reward,
        layer=layer,
        gain_units=gain_units,
        sampling=Sampling(seed=seed, progress=progress),
    )
    study.update(
        run=str(run_dir),
        reward=reward.name,
        n_edit_texts=n_edit_texts,
        n_measure_texts=n_measure_texts,
        n_prompts=len(prompts),
        gain_units_asked=gain_units,
    )
    return study
