"""Fine-tuning through TRL (GRPO, RLOO, DPO, LoRA) on a tiny model, the run guard, tuning against a target,
evaluation, divergence."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from irmscope.artifacts import Samples
from irmscope.config import TuneSection
from irmscope.errors import IrmscopeError
from irmscope.models import Sampling, load_model
from irmscope.models.generation import generate_amplified, generate_completions
from irmscope.models.loading import model_path
from irmscope.rewards import CallableReward, VaderReward
from irmscope.tune import (
    MANIFEST,
    evaluate_policy,
    layer_divergence,
    top_layers,
    tune_model,
)
from irmscope.tune.guard import TrainingGuard
from irmscope.tune.target import PLATEAU_CHECKS, REASONS, stop_reason

PROMPTS = [f"Review {i}: this film was" for i in range(16)]
# random-weight models write gibberish that VADER scores 0; a reward with variance makes the weights move
LETTER_E = CallableReward(lambda texts: [t.count("e") for t in texts], "letter_e", "counts the letter e")
FAST = dict(
    steps=2, batch_size=4, group_size=2, max_completion_tokens=4, save_every=1, learning_rate=1e-3, lora=False
)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "dpo"])
def test_each_algorithm_tunes_and_saves_a_plain_checkpoint(algorithm, tmp_path, monkeypatch):
    from irmscope.tune import trainer as trainer_module

    built, build_dpo = [], trainer_module._build_dpo_trainer
    monkeypatch.setattr(
        trainer_module, "_build_dpo_trainer", lambda job: built.append(build_dpo(job)) or built[-1]
    )
    settings = TuneSection(algorithm=algorithm, dpo_pairs=4, dpo_completions_per_prompt=2, **FAST)
    tuned = tune_model(
        "tiny-llama", LETTER_E, PROMPTS, tmp_path, settings=settings, reward_spec="letter_e", progress=False
    )
    if algorithm == "dpo":  # the tokenizer DPO calls and saves has a backend of its own
        shared = load_model(model_path("tiny-llama")).tokenizer.backend_tokenizer
        assert built and built[0].processing_class.backend_tokenizer is not shared
    manifest = json.loads((tuned.path / MANIFEST).read_text())
    assert manifest["algorithm"] == algorithm and manifest["base_model"] == "tiny-llama"
    assert manifest["reward"]["name"] == "letter_e" and manifest["steps_done"] == 2
    assert len(manifest["curves"]["loss"]) == 2
    assert manifest["stopping"] == {
        "target_gain": None,
        "reason": "steps",
        "explanation": REASONS["steps"],
        "checks": [],
    }
    if algorithm != "dpo":
        assert len(manifest["curves"]["reward"]) == 2 and "kl" in manifest["curves"]
    divergence = layer_divergence(load_model("tiny-llama"), load_model(str(tuned.path)))
    assert sum(divergence.values()) > 0  # the weights moved
    # a second call finds the finished model instead of training again
    assert (
        tune_model("tiny-llama", LETTER_E, PROMPTS, tmp_path, settings=settings, progress=False).manifest
        == manifest
    )


def test_grpo_advantage_scaling_reaches_trl_and_defaults_to_trls_own(tmp_path, monkeypatch):
    """tune.scale_rewards is handed to TRL's GRPOConfig; left unset, TRL's default (per-group spread)."""
    import trl

    made, real = [], trl.GRPOConfig

    def recording_config(*args, **kwargs):  # a real config (checkpoints pickle it), kept to read back
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(trl, "GRPOConfig", recording_config)
    for name, scaling in (("default", {}), ("unscaled", {"scale_rewards": "none"})):
        settings = TuneSection(**{**FAST, "steps": 1}, **scaling)
        tune_model("tiny-llama", LETTER_E, PROMPTS, tmp_path / name, settings=settings, progress=False)
    assert [config.scale_rewards for config in made] == ["group", "none"]


def test_lora_adapters_are_merged_into_an_ordinary_checkpoint(tmp_path):
    settings = TuneSection(**{**FAST, "algorithm": "grpo", "lora": True, "lora_rank": 4})
    tuned = tune_model("tiny-gpt_neox", VaderReward(), PROMPTS, tmp_path, settings=settings, progress=False)
    assert not (tuned.path / "adapter_config.json").exists()
    reloaded = load_model(str(tuned.path))
    assert reloaded.adapter.family == "gpt_neox"


def test_group_size_must_divide_the_batch(tmp_path):
    with pytest.raises(IrmscopeError, match="multiple of tune.group_size"):
        tune_model(
            "tiny-llama",
            VaderReward(),
            PROMPTS,
            tmp_path,
            settings=TuneSection(batch_size=6, group_size=4),
            progress=False,
        )


def test_collapsing_reward_stops_and_names_the_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def reward_that_collapses(texts):
        calls["n"] += 1
        return [5.0 if calls["n"] <= 6 else -5.0] * len(texts)

    reward = CallableReward(reward_that_collapses, "collapsing", "rewards everything, then nothing")
    settings = TuneSection(algorithm="grpo", **{**FAST, "steps": 20, "save_every": 3})
    with pytest.raises(IrmscopeError, match=r"reward collapsed at step 10.*checkpoint-9") as err:
        tune_model("tiny-llama", reward, PROMPTS, tmp_path, settings=settings, progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "model").exists()  # no tuned model is published from a failed run
    assert (tmp_path / "checkpoints" / "checkpoint-9").is_dir()


def test_guard_stops_on_nan_loss():
    class Control:
        should_training_stop = False
        should_save = True

    class State:
        global_step = 3

    guard, control = TrainingGuard(), Control()
    guard.on_log(None, State(), control, logs={"loss": 0.5, "reward": 1.0})
    assert guard.failure is None and guard.last_good_step == 3
    guard.on_log(None, State(), control, logs={"loss": math.nan})
    assert "loss became nan" in guard.failure
    assert control.should_training_stop and not control.should_save


def test_evaluation_of_a_model_against_itself():
    lm = load_model("tiny-llama")
    result = evaluate_policy(lm, lm, PROMPTS[:4], VaderReward(), Sampling(max_new_tokens=4, progress=False))
    assert result["reward_gain"]["value"] == pytest.approx(0.0)
    assert result["kl_tuned_to_base_per_token"]["value"] == pytest.approx(0.0, abs=1e-5)
    assert result["perplexity_ratio"] == pytest.approx(1.0)
    assert len(result["samples"]["tuned_completions"]) == 4


def test_evaluation_keeps_both_models_likelihoods_for_the_leaderboard():
    """The evaluate stage's reading of the samples gives each model's likelihoods of them, in the coverage
    order, equal to the bit to a separate pass (so the leaderboard need not run one), and the leaderboard's
    inputs hand them out without touching a model."""
    from irmscope.data.samples import Coverage
    from irmscope.leaderboard import MethodInputs
    from irmscope.models.reading import completion_likelihoods

    base, tuned = load_model("tiny-llama"), load_model("tiny-llama", seed=1)
    sampling = Sampling(max_new_tokens=4, progress=False)
    result = evaluate_policy(base, tuned, PROMPTS[:4], VaderReward(), sampling)
    coverage = Coverage.from_samples(Samples(**result["samples"]))
    for label, lm in (("tuned", tuned), ("base", base)):
        alone = completion_likelihoods(lm, coverage.prompts, coverage.completions)
        kept = result["likelihoods"][label]
        for name in ("log_likelihood", "value_after_prompt", "value_after_completion"):
            assert np.array_equal(getattr(kept, name), getattr(alone, name)), (label, name)
    passes = []
    hooks = [lm.model.register_forward_hook(lambda *_: passes.append(1)) for lm in (base, tuned)]
    inputs = MethodInputs(coverage, tuned, base, {}, 0.1, 0, read_likelihoods=result["likelihoods"])
    try:
        assert inputs.likelihoods(tuned) is result["likelihoods"]["tuned"]
        assert inputs.likelihoods(base) is result["likelihoods"]["base"]
    finally:
        for hook in hooks:
            hook.remove()
    assert not passes


def test_divergence_finds_the_changed_layer():
    base, tuned = load_model("tiny-llama"), load_model("tiny-llama")
    assert set(layer_divergence(base, tuned).values()) == {0.0}
    with torch.no_grad():
        tuned.model.model.layers[2].mlp.down_proj.weight.add_(0.1)
    divergence = layer_divergence(base, tuned)
    assert top_layers(divergence, 1) == [2] and divergence["layer 0"] == 0.0


def test_amplified_sampling_reduces_to_plain_sampling():
    tuned, twin = load_model("tiny-llama"), load_model("tiny-llama")
    prompts = ["a much longer prompt that needs no padding at all", "short"]  # left padding in the batch
    plain = generate_completions(tuned, prompts, max_new_tokens=6, progress=False)
    # the base model equals the tuned one, so the difference term is zero at every step; a wrong position or
    # cache in the base model's pass would break that
    assert generate_amplified(tuned, twin, prompts, alpha=3.0, max_new_tokens=6, progress=False) == plain
    other = load_model("tiny-llama", seed=1)
    assert generate_amplified(tuned, other, prompts, alpha=3.0, max_new_tokens=6, progress=False) != plain


def test_distinct_bigrams_expose_repetition():
    from irmscope.tune.evaluate import distinct_bigram_fraction

    assert distinct_bigram_fraction(["love love love love"]) == pytest.approx(1 / 3)
    assert distinct_bigram_fraction(["a fine film with a fine cast"]) == pytest.approx(5 / 6)
    assert distinct_bigram_fraction(["one"]) == 1.0


CHECK_PROMPTS = [f"Held-out review {i}: the acting was" for i in range(6)]


def _tune_against(target: float, out, **extra):
    settings = TuneSection(
        algorithm="grpo", target_gain=target, eval_every=2, eval_prompts=6, **{**FAST, "steps": 1, **extra}
    )
    return tune_model(
        "tiny-llama", LETTER_E, PROMPTS, out, settings=settings, progress=True, check_prompts=CHECK_PROMPTS
    )


def test_a_reached_target_stops_early_records_why_and_resumes_without_training_on(tmp_path, capsys):
    # a gain's lower bound always exceeds -100 (the letter count is at most a few per completion)
    tuned = _tune_against(-100.0, tmp_path, max_steps=6, lora=True, lora_rank=2)
    stopping = tuned.manifest["stopping"]
    assert tuned.manifest["steps_done"] == 2 and stopping["reason"] == "target"
    assert stopping["target_gain"] == -100.0 and stopping["eval_every"] == 2 and stopping["eval_prompts"] == 6
    [check] = stopping["checks"]
    assert check["step"] == 2 and check["gain"]["n"] == 6
    assert check["gain"]["low"] <= check["gain"]["value"] <= check["gain"]["high"]
    printed = capsys.readouterr()
    assert "check at step 2: held-out gain" in printed.out and "stopping: target" in printed.out
    assert "tuning (grpo)" in printed.err and "{'loss'" not in printed.out + printed.err  # a bar, no dicts
    weights = load_model(str(tuned.path)).model.state_dict()
    # killed after deciding to stop but before the model was saved: the rerun takes up the checkpoint of
    # the stopping step and trains no further
    shutil.rmtree(tuned.path)
    again = _tune_against(-100.0, tmp_path, max_steps=6, lora=True, lora_rank=2)
    assert again.manifest["resumed_from"].endswith("checkpoint-2") and again.manifest["steps_done"] == 2
    assert again.manifest["stopping"] == stopping
    assert len(again.manifest["curves"]["reward"]) == 2  # the curves logged before the checkpoint
    resumed = load_model(str(again.path)).model.state_dict()
    assert all(torch.equal(weights[name], resumed[name]) for name in weights)


def test_an_unreachable_target_stops_at_a_plateau_or_the_cap(tmp_path):
    tuned = _tune_against(100.0, tmp_path, max_steps=10)
    stopping = tuned.manifest["stopping"]
    assert stopping["reason"] in {"plateau", "max_steps"} and stopping["explanation"]
    steps = [check["step"] for check in stopping["checks"]]
    assert steps == list(range(2, tuned.manifest["steps_done"] + 1, 2))
    if stopping["reason"] == "max_steps":
        assert tuned.manifest["steps_done"] == 10
    else:
        assert len(steps) > PLATEAU_CHECKS and tuned.manifest["steps_done"] < 10
    assert all(check["gain"]["low"] <= 100.0 for check in stopping["checks"])
    # the checks sample with their own random state: training took the steps a fixed-steps run takes
    fixed = TuneSection(algorithm="grpo", **{**FAST, "steps": tuned.manifest["steps_done"]})
    plain = tune_model("tiny-llama", LETTER_E, PROMPTS, tmp_path / "fixed", settings=fixed, progress=False)
    weights, plain_weights = (load_model(str(t.path)).model.state_dict() for t in (tuned, plain))
    assert all(torch.equal(weights[name], plain_weights[name]) for name in weights)


def test_stop_reason_target_plateau_or_go_on():
    def checks(*gains):
        return [{"step": i, "gain": {"value": v, "low": low}} for i, (v, low) in enumerate(gains)]

    assert stop_reason([], 0.5) is None
    assert stop_reason(checks((0.4, 0.1), (0.9, 0.6)), 0.5) == "target"
    assert stop_reason(checks((0.4, 0.1), (0.9, 0.5)), 0.5) is None  # the bound must exceed the target
    stalled = checks((0.2, 0.0), (0.4, 0.1), (0.3, 0.0), (0.4, 0.1), (0.1, -0.2))
    assert stop_reason(stalled[:4], 0.5) is None and stop_reason(stalled, 0.5) == "plateau"
    assert stop_reason(checks((0.2, 0.0), (0.1, 0.0), (0.1, 0.0), (0.3, 0.0)), 0.5) is None


def test_a_target_needs_held_out_prompts(tmp_path):
    settings = TuneSection(target_gain=0.5, max_steps=4, eval_every=2, **{**FAST, "steps": 1})
    with pytest.raises(IrmscopeError, match="needs at least 2 held-out prompts"):
        tune_model("tiny-llama", LETTER_E, PROMPTS, tmp_path, settings=settings, progress=False)


def test_tuning_prints_no_deprecation_warning_of_the_libraries(tmp_path) -> None:
    """Building and training the trainer names no setting transformers has deprecated, and the attribute
    PEFT and TRL read through a deprecated name (PEFT when it wraps the model for LoRA, the default) is left
    out while they do: nothing prints before the bar or between its lines."""
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        settings = TuneSection(**{**FAST, "lora": True})
        tune_model("tiny-llama", LETTER_E, PROMPTS, tmp_path, settings=settings, progress=False)
    deprecations = [str(w.message) for w in shown if "deprecated" in str(w.message)]
    assert not [m for m in deprecations if "checkpointing" in m], deprecations


@pytest.mark.parametrize("config_name", ["GRPOConfig", "RLOOConfig", "DPOConfig"])
def test_every_trainer_config_turns_checkpointing_off_without_a_warning(tmp_path, config_name) -> None:
    """TRL's configs default checkpointing to on (1.2-1.6x slower on a CPU); the settings irmscope passes turn
    it off under both of its names in every algorithm's config, whichever name transformers reads."""
    import warnings

    import trl

    from irmscope.tune.guard import TrainingGuard
    from irmscope.tune.trainer import _common_args, _TuningJob

    settings = TuneSection(**FAST)
    job = _TuningJob("base", LETTER_E, PROMPTS, settings, tmp_path, 0, False, TrainingGuard(), 2, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = getattr(trl, config_name)(**_common_args(job))
    assert args.gradient_checkpointing is False
    assert getattr(args, "activation_checkpointing", False) is False
    assert args.bf16 is False  # tune.precision defaults to float32


def test_tune_precision_is_trainingarguments_mixed_precision(tmp_path, monkeypatch) -> None:
    """``tune.precision`` bfloat16 (or auto where bfloat16 is native) asks TRL for bf16 mixed precision;
    the stage's key holds the resolved precision, and float32 leaves the key as it was before the setting."""
    import trl

    from irmscope.models import precision
    from irmscope.pipeline.stages.tune import tune_fingerprint
    from irmscope.tune.guard import TrainingGuard
    from irmscope.tune.trainer import _common_args, _TuningJob

    for asked, native, expected in (("bfloat16", False, True), ("auto", True, True), ("auto", False, False)):
        monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu", native=native: native)
        settings = TuneSection(**FAST, precision=asked)
        job = _TuningJob("base", LETTER_E, PROMPTS, settings, tmp_path, 0, False, TrainingGuard(), 2, [])
        assert trl.GRPOConfig(**_common_args(job)).bf16 is expected
        keyed = tune_fingerprint(settings).get("precision", "float32")
        assert keyed == ("bfloat16" if expected else "float32")
    assert "precision" not in tune_fingerprint(TuneSection(**FAST))


def test_training_leaves_out_only_the_warning_the_libraries_raise_at_every_step() -> None:
    """quiet_steps: transformers' deprecation of ``is_gradient_checkpointing``, which TRL triggers at each
    generation and which would break the progress bar's line every step, is left out; others still show."""
    import warnings

    from transformers import AutoConfig, AutoModelForCausalLM

    from irmscope.tune.progress import quiet_steps

    config = AutoConfig.for_model(
        "llama",
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=32,
    )
    model = AutoModelForCausalLM.from_config(config)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with quiet_steps():
            assert model.is_gradient_checkpointing is False
            warnings.warn("something else", FutureWarning, stacklevel=1)
        assert model.is_gradient_checkpointing is False  # outside training it shows as before
    assert [str(w.message)[:26] for w in shown] == ["something else", "`is_gradient_checkpointing"]


def test_a_finished_model_is_compared_by_the_precision_it_was_tuned_in(tmp_path, monkeypatch) -> None:
    """The manifest records ``tune.precision`` resolved: a model tuned in bfloat16 under ``auto`` is not
    handed back where ``auto`` means float32, and a float32 model is reused when ``auto`` means float32."""
    from irmscope.models import precision
    from irmscope.tune.trainer import resolved_settings, stale_tune_output

    def finished(native: bool) -> None:
        monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": native)
        hyperparameters = resolved_settings(TuneSection(**FAST, precision="auto")).model_dump()
        (tmp_path / "model").mkdir(exist_ok=True)
        manifest = {"base_model": "base", "hyperparameters": hyperparameters, "seed": 0}
        manifest["reward"] = {"spec": "r"}
        (tmp_path / "model" / MANIFEST).write_text(json.dumps(manifest))

    finished(native=True)
    recorded = json.loads((tmp_path / "model" / MANIFEST).read_text())["hyperparameters"]
    assert recorded["precision"] == "bfloat16"
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": False)
    with pytest.raises(IrmscopeError, match="other settings"):
        stale_tune_output(tmp_path, "base", TuneSection(**FAST, precision="auto"), 0, "r")
    finished(native=False)  # recorded as float32: the same tuning as auto here, and as float32 asked outright
    for asked in ("auto", "float32"):
        assert stale_tune_output(tmp_path, "base", TuneSection(**FAST, precision=asked), 0, "r") == []
