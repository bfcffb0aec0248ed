"""Fine-tune a subject against a known reward with TRL: GRPO and RLOO (online RL with a KL penalty to the
reference model; they take the place of PPO, which TRL no longer ships) and DPO (offline, on preference
pairs built from reward-scored completions of the base model).

The tuned model is saved as an ordinary Hugging Face checkpoint (LoRA adapters are merged) with
``irmscope_manifest.json`` beside it: base model, reward, algorithm, hyperparameters, and the reward and KL
curves. Training checkpoints are kept while the run is healthy, so a killed run resumes from the last one;
a run whose loss turns NaN or whose reward collapses stops with a one-line error that names the last good
checkpoint.

The run takes ``tune.steps`` steps, or with ``tune.target_gain`` set runs against that target on held-out
prompts (:mod:`irmscope.tune.target`); the manifest's ``stopping`` says which, and why it stopped. Progress
is one bar (:mod:`irmscope.tune.progress`) instead of transformers' printed dictionaries.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from irmscope.config import TuneSection
from irmscope.errors import IrmscopeError
from irmscope.io import atomic_write_dir, write_json
from irmscope.models.accounting import count_tokens
from irmscope.models.categorical import fast_multinomial
from irmscope.models.loading import load_model, load_tokenizer, model_path
from irmscope.models.precision import resolve_precision
from irmscope.rewards import Reward
from irmscope.tune.completion_scoring import completion_positions_only
from irmscope.tune.guard import TrainingGuard
from irmscope.tune.progress import quiet_steps, quiet_trainer
from irmscope.tune.target import CHECKS_FILE, REASONS, GainMeter, TargetStop, recorded_checks
from irmscope.validation import remove

MANIFEST = "irmscope_manifest.json"

#: transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` within the versions
#: irmscope supports and warns on the old name; the setting goes under whichever name the installed one reads
CHECKPOINTING_ARGUMENT = (
    "activation_checkpointing"
    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    else "gradient_checkpointing"
)
# what tune_model writes under its out_dir
OUTPUTS = ("model", "checkpoints", "preference_pairs.json", CHECKS_FILE)


@dataclass(frozen=True)
class TunedModel:
    path: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class _TuningJob:
    """One tuning, as both trainer builders (online RL and DPO) read it: the base model's folder, the
    reward, the training prompts, the tune settings, the output folder, the seed, whether to show bars, and
    the guard that stops a run going bad, the step cap, and the trainer's callbacks (guard first)."""

    base_path: str
    reward: Reward
    prompts: list[str]
    settings: TuneSection
    work: Path
    seed: int
    progress: bool
    guard: TrainingGuard
    max_steps: int
    callbacks: list


def _common_args(job: _TuningJob) -> dict[str, Any]:
    # CPU-friendly settings: no gradient checkpointing (1.2-1.6x slower on CPU), no external loggers.
    # tune.precision bfloat16 is TrainingArguments' mixed precision (accelerate's autocast around the
    # training passes; TRL samples outside it, in float32): on this 2-core CPU with native bfloat16 a LoRA
    # forward-backward costs 2.73 ms a token against 4.37 (benchmarks/results/pipeline.json).
    # transformers' own bar and printed logs are replaced by irmscope's bar (quiet_trainer).
    settings, seed = job.settings, job.seed
    device = training_device()
    return dict(
        output_dir=str(job.work / "checkpoints"),
        use_cpu=device == "cpu",
        bf16=resolved_settings(settings).precision == "bfloat16",
        **{CHECKPOINTING_ARGUMENT: False},
        report_to="none",
        seed=seed,
        data_seed=seed,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_every,
        save_total_limit=1,
        save_only_model=False,
        disable_tqdm=True,
    )


def training_device() -> str:
    """The device TRL trains on here (its default): what ``tune.precision: auto`` is resolved for."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolved_settings(settings: TuneSection) -> TuneSection:
    """``settings`` with ``precision`` as it runs on this machine (``auto`` resolved), as the manifest
    records it and as a finished model's settings are compared: a model trained in bfloat16 under ``auto``
    is not reused where ``auto`` means float32."""
    return settings.model_copy(update={"precision": resolve_precision(settings.precision, training_device())})


def _peft_config(settings: TuneSection):
    if not settings.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_rank,
        lora_alpha=2 * settings.lora_rank,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def _build_rl_trainer(job: _TuningJob):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    settings = job.settings

    if settings.batch_size % settings.group_size:
        raise IrmscopeError(
            f"tune.batch_size ({settings.batch_size}) must be a multiple of tune.group_size "
            f"({settings.group_size}): each step scores whole groups of completions"
        )
    config_cls, trainer_cls = (
        (GRPOConfig, GRPOTrainer) if settings.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    )
    scaling = {} if settings.scale_rewards is None else {"scale_rewards": settings.scale_rewards}
    args = config_cls(
        **_common_args(job),
        **scaling,
        max_steps=job.max_steps,
        per_device_train_batch_size=settings.batch_size,
        num_generations=settings.group_size,
        beta=settings.beta,
        max_completion_length=settings.max_completion_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        disable_dropout=True,
        # fixed-length completions: Eq. 3 sums over tokens, so equal lengths keep rewards comparable
        generation_kwargs={"min_new_tokens": settings.max_completion_tokens},
    )
    tokenizer = load_tokenizer(job.base_path)  # TRL pads prompts on the left itself
    return trainer_cls(
        model=job.base_path,
        reward_funcs=job.reward.as_trl_reward_func(),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": job.prompts}),
        processing_class=tokenizer,
        callbacks=job.callbacks,
        peft_config=_peft_config(settings),
    )


def _build_dpo_trainer(job: _TuningJob):
    from trl import DPOConfig, DPOTrainer

    from irmscope.data import build_preference_pairs
    from irmscope.models.generation import generate_completions

    settings, prompts = job.settings, job.prompts
    lm = load_model(job.base_path)
    pairs_file = job.work / "preference_pairs.json"
    if pairs_file.is_file():  # sampled already by an earlier, interrupted run
        rows = json.loads(pairs_file.read_text())
    else:
        k = settings.dpo_completions_per_prompt
        chosen_prompts = prompts[: settings.dpo_pairs]
        repeated = [p for p in chosen_prompts for _ in range(k)]
        completions = generate_completions(
            lm, repeated, max_new_tokens=settings.max_completion_tokens, seed=job.seed, progress=job.progress
        )
        scores = job.reward.score_completions(repeated, completions)
        grouped = [completions[i * k : (i + 1) * k] for i in range(len(chosen_prompts))]
        grouped_scores = [scores[i * k : (i + 1) * k].tolist() for i in range(len(chosen_prompts))]
        rows = build_preference_pairs(chosen_prompts, grouped, grouped_scores).to_list()
        write_json(pairs_file, rows)
    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    steps_per_epoch = math.ceil(len(dataset) / settings.batch_size)
    args = DPOConfig(
        **_common_args(job),
        per_device_train_batch_size=settings.batch_size,
        num_train_epochs=settings.dpo_epochs,
        max_steps=min(job.max_steps, steps_per_epoch * settings.dpo_epochs),
        beta=max(settings.beta, 1e-3),
        disable_dropout=True,
    )
    return DPOTrainer(
        model=job.base_path,
        args=args,
        train_dataset=dataset,
        # a backend of its own (models.tokenizer_copies): TRL calls it and _save_tuned saves it, while the
        # target's gain checks call other copies of the same folder's tokenizer
        processing_class=copy.deepcopy(lm.tokenizer),
        callbacks=job.callbacks,
        peft_config=_peft_config(settings),
    )


def stale_tune_output(
    out_dir: str | Path,
    base: str,
    settings: TuneSection,
    seed: int,
    reward_spec: str | None,
    overwrite: bool = False,
) -> list[Path]:
    """Check ``out_dir`` before any work: what :func:`tune_model` would reuse must be this very tuning.

    A finished model of the same base, reward, settings and seed is returned as it is, and checkpoints are
    resumed, so both are left alone. A finished model tuned differently is refused (``tune_model`` would
    hand it back as if it were this one) unless ``overwrite``; then it and its checkpoints are the folders
    returned, for the caller to delete (:func:`irmscope.validation.remove`) once the new tuning can start.
    A file, or a folder holding other things, is refused.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise IrmscopeError(f"--out {out_dir} is a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not any((out_dir / n).exists() for n in OUTPUTS):
        raise IrmscopeError(f"--out {out_dir} holds other files; choose an empty or new folder")
    manifest_path = out_dir / "model" / MANIFEST
    if not manifest_path.is_file():
        return []
    try:
        done = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        done = {}
    asked = json.loads(json.dumps(resolved_settings(settings).model_dump()))
    same = isinstance(done, dict) and (
        done.get("base_model"),
        _as_todays_settings(done.get("hyperparameters")),
        done.get("seed"),
        (done.get("reward") or {}).get("spec"),
    ) == (base, asked, seed, reward_spec)
    if same and not overwrite:
        return []
    if not overwrite:
        raise IrmscopeError(
            f"--out {out_dir} holds a model tuned with other settings (base, reward, seed or tune "
            "settings); pass --overwrite to replace it, or choose another folder"
        )
    return [out_dir / name for name in OUTPUTS if (out_dir / name).exists()]


def _as_todays_settings(saved: Any) -> Any:
    """A manifest's tune settings as today's :class:`TuneSection` dumps them, so a setting added since the
    model was tuned (``scale_rewards``) takes its default instead of making a finished model look tuned
    differently; settings that no longer validate are returned as saved (and so differ)."""
    try:
        return json.loads(json.dumps(TuneSection.model_validate(saved).model_dump()))
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return saved


def _finish_at_checkpoint(trainer, checkpoint: str) -> None:
    """Take up a run that had decided to stop at ``checkpoint`` (killed before its model was saved): load
    the checkpoint's weights and state and let the callbacks see a run of no further steps. ``train()``
    cannot do this: it always takes one more step before it looks at ``max_steps`` or a stop."""
    from transformers import TrainerState
    from transformers.trainer import TRAINER_STATE_NAME

    trainer._load_from_checkpoint(checkpoint)  # the Trainer's own loader: full weights or LoRA adapters
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME))
    trainer.callback_handler.on_train_begin(trainer.args, trainer.state, trainer.control)
    trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)


def _check_tune_inputs(
    settings: TuneSection, prompts: list[str], check_prompts: Sequence[str] | None
) -> None:
    """Refuse, before any model is loaded, a tuning that could not run or could not honour its target."""
    if settings.algorithm == "none":
        raise IrmscopeError("tune.algorithm is 'none': nothing to tune; choose grpo, rloo or dpo")
    if not prompts:
        raise IrmscopeError("no training prompts; check the prompt dataset is not empty")
    if settings.target_gain is not None and len(check_prompts or []) < 2:
        raise IrmscopeError(
            f"tune.target_gain needs at least 2 held-out prompts to check the gain on, got "
            f"{len(check_prompts or [])}; add training-split reviews or lower tune.eval_prompts"
        )


def _last_checkpoint(checkpoints: Path) -> str | None:
    """The newest training checkpoint under ``checkpoints``, or None: what a killed run resumes from, and
    what a failed run names as its last good state."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


def _checkpoint_step(checkpoint: str | None) -> int:
    """The global step a checkpoint folder (``checkpoint-<step>``) was saved at; 0 for a fresh run."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    return int(Path(checkpoint).name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")) if checkpoint else 0


def _target_stop(
    base_path: str,
    reward: Reward,
    check_prompts: Sequence[str],
    settings: TuneSection,
    *,
    out_dir: Path,
    seed: int,
    resumed_step: int,
) -> tuple[TargetStop, bool]:
    """The callback that tunes against ``settings.target_gain``, and whether the run being resumed had
    already decided to stop at its last checkpoint (then no further step may be trained: see
    :func:`_finish_at_checkpoint`). The gain meter holds its own copy of the base model, as the reference
    the tuned policy's held-out gain is measured against."""
    _, stop = recorded_checks(out_dir, resumed_step)
    meter = GainMeter(
        load_model(base_path),
        reward,
        list(check_prompts),
        max_new_tokens=settings.max_completion_tokens,
        seed=seed,
    )
    # the stopping step is always checkpointed (see TargetStop)
    return TargetStop(meter, settings, out_dir), stop is not None


def _count_loaded_tokens(trainer) -> None:
    """Register the models TRL loaded itself (policy and, where there is one, reference) with the token
    accounting, which otherwise sees only models loaded through irmscope."""
    for loaded in (trainer.model, getattr(trainer, "ref_model", None)):
        if loaded is not None:
            count_tokens(loaded)


def _raise_if_failed(guard: TrainingGuard, checkpoints: Path) -> None:
    """Turn a run the guard stopped (NaN loss, collapsed reward) into a one-line error naming the last good
    checkpoint, so a bad run is never saved as a tuned model."""
    if not guard.failure:
        return
    last = _last_checkpoint(checkpoints)
    keep = f"the last good checkpoint is {last}" if last else "no checkpoint had been saved yet"
    raise IrmscopeError(
        f"training stopped: {guard.failure}; {keep}; try a lower tune.learning_rate or a larger tune.beta"
    )


def _stopping(target: TargetStop | None) -> dict[str, Any]:
    """The manifest's ``stopping`` section: the target's account of why it stopped, or, for a run without a
    target, that it took its ``tune.steps``."""
    if target is not None:
        return target.stopping()
    return {"target_gain": None, "reason": "steps", "explanation": REASONS["steps"], "checks": []}


def _save_tuned(final: Path, trainer, settings: TuneSection, manifest: dict[str, Any]) -> TunedModel:
    """Write the trained policy (LoRA adapters merged, so it loads as an ordinary checkpoint), its tokenizer
    and the manifest to ``final`` in one atomic step: a folder with a manifest is always a finished run."""
    model = trainer.model
    if settings.lora:
        model = model.merge_and_unload()
    tokenizer = trainer.processing_class

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / MANIFEST, manifest)

    atomic_write_dir(final, write)
    return TunedModel(final, manifest)


def tune_model(
    base: str,
    reward: Reward,
    prompts: list[str],
    out_dir: str | Path,
    *,
    settings: TuneSection,
    seed: int = 0,
    reward_spec: str | None = None,
    progress: bool = True,
    check_prompts: Sequence[str] | None = None,
) -> TunedModel:
    """Fine-tune ``base`` against ``reward`` on ``prompts``; the tuned checkpoint goes to ``out_dir/model``.

    With ``settings.target_gain`` set, ``check_prompts`` are the held-out prompts the gain is checked on
    (none of them a training prompt). Re-running with the same ``out_dir`` after a kill resumes from the last
    training checkpoint.
    """
    _check_tune_inputs(settings, prompts, check_prompts)
    out_dir = Path(out_dir)
    final = out_dir / "model"
    if (final / MANIFEST).is_file():
        return TunedModel(final, json.loads((final / MANIFEST).read_text()))
    base_path = model_path(base, seed=seed)
    checkpoints = out_dir / "checkpoints"
    resume = _last_checkpoint(checkpoints)
    guard = TrainingGuard(collapse_drop=settings.collapse_drop)
    callbacks: list = [guard]
    target, stopped_at_checkpoint = None, False
    if settings.target_gain is not None:
        target, stopped_at_checkpoint = _target_stop(
            base_path,
            reward,
            check_prompts or [],
            settings,
            out_dir=out_dir,
            seed=seed,
            resumed_step=_checkpoint_step(resume),
        )
        callbacks.insert(0, target)
    build = _build_dpo_trainer if settings.algorithm == "dpo" else _build_rl_trainer
    job = _TuningJob(
        base_path, reward, prompts, settings, out_dir, seed, progress, guard, settings.step_cap, callbacks
    )
    with quiet_steps():  # building the trainer reads the same deprecated attribute
        trainer = build(job)
    _count_loaded_tokens(trainer)
    bar = quiet_trainer(trainer, f"tuning ({settings.algorithm})" if progress else None)
    if target is not None and bar is not None:
        target.report = bar.write
    start = time.perf_counter()
    if stopped_at_checkpoint and resume:
        _finish_at_checkpoint(trainer, resume)
    else:
        # TRL samples through model.generate: the same exact, faster draw; and its log-probabilities
        # project the completion tokens only, not the prompts as well (irmscope.tune.completion_scoring)
        with fast_multinomial(), completion_positions_only(), quiet_steps():
            trainer.train(resume_from_checkpoint=resume)
    _raise_if_failed(guard, checkpoints)
    manifest = {
        "base_model": base,
        "base_path": base_path,
        "algorithm": settings.algorithm,
        "reward": {"name": reward.name, "description": reward.description, "spec": reward_spec},
        "hyperparameters": resolved_settings(settings).model_dump(),
        "seed": seed,
        "n_train_prompts": len(prompts),
        "steps_done": trainer.state.global_step,
        "stopping": _stopping(target),
        "train_seconds": round(time.perf_counter() - start, 1),
        "resumed_from": resume,
        "curves": guard.curves,
    }
    return _save_tuned(final, trainer, settings, manifest)


def tune_on_reviews(
    out_dir: str | Path,
    *,
    model: str,
    reward_spec: str,
    data: str,
    settings: TuneSection,
    seed: int = 0,
    overwrite: bool = False,
) -> TunedModel:
    """What ``irmscope tune`` runs: :func:`tune_model` on the first ``settings.n_train_prompts`` 30-token
    prefixes of ``data``'s train split (in the seed's order, as the pipeline's prompts stage reads them);
    with a ``target_gain``, the next ``settings.eval_prompts`` prefixes are the held-out checks' prompts.
    The output folder and the reward are checked before the tokenizer or any review is read, and a model
    tuned differently is deleted (with ``overwrite``) only once the new tuning can start."""
    from irmscope.data import PROMPT_TOKENS, review_prompts
    from irmscope.rewards import load_reward

    stale = stale_tune_output(out_dir, model, settings, seed, reward_spec, overwrite)
    scorer = load_reward(reward_spec)
    tokenizer = load_tokenizer(model, seed=seed)
    n_train = settings.n_train_prompts
    n_check = 0 if settings.target_gain is None else settings.eval_prompts
    # the target's held-out checks read the prompts right after the training prompts: none is trained on
    prompts = review_prompts(data, "train", tokenizer, n_train + n_check, PROMPT_TOKENS, seed)
    remove(stale)
    return tune_model(
        model,
        scorer,
        prompts[:n_train],
        out_dir,
        settings=settings,
        seed=seed,
        reward_spec=reward_spec,
        check_prompts=prompts[n_train:],
    )
