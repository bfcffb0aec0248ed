"""Typed, validated run configuration and its presets.

A configuration is a tree of pydantic models with ``extra="forbid"``, so a misspelt key is an error that
names the key and the valid ones. Presets are named starting points; a YAML/JSON file or ``--set`` options
override single values on top of them.

* ``smoke``: a tiny random model and a handful of prompts; runs in CI in well under 3 minutes.
* ``demo``: the default model (SmolLM2-135M-Instruct); the README's main command.
* ``paper``: the main paper's settings (1,000 evaluation completions, five top-divergence layers).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from irmscope.sae.crosscoder import CrosscoderConfig
    from irmscope.sae.train import TrainConfig

from irmscope.errors import IrmscopeError
from irmscope.validation import Bool, Float, Index, Int, Name, Precision, Seed, read_text_file


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    name: Name = Field(
        "smollm2-135m", description="the base model: packaged name, tiny-<family>, folder or hub id"
    )
    tuned: Name | None = Field(
        None, description="study this already-tuned model (folder or hub id) instead of tuning"
    )


class DataSection(_Section):
    source: Name = Field(
        "rotten-tomatoes", description="rotten-tomatoes, imdb, a hub id, or a local file/folder"
    )
    split: Name = "test"
    n_prompts: Int = Field(200, ge=1, description="evaluation prompts (30-token prefixes)")
    prefix_tokens: Int = Field(30, ge=1, description="prompt length in tokens (the paper: 30)")


class GenerationSection(_Section):
    max_new_tokens: Int = Field(32, ge=1)
    # 128 sampled fastest of 16/32/64/128 on the 2-core machine (SmolLM2-135M, 30-token prompts: 1.6x the
    # tokens per second of 16); benchmarks/bench_pipeline.py measures it again on any machine
    batch_size: Int = Field(128, ge=1, description="prompts sampled together (KV-cached)")
    temperature: Float = Field(1.0, gt=0)
    top_p: Float = Field(1.0, gt=0, le=1)
    precision: Precision = Field(
        "auto",
        description="matrix products while sampling: auto is bfloat16 where the CPU/GPU has it natively "
        "(a sampling step 1.25x faster here; log-probabilities are never compared in it)",
    )


class RewardSection(_Section):
    spec: Name = Field(
        "vader",
        description="vader, lexicon:PATH.tsv, classifier:DIR, noise:SEED (a null control), readout:DIR, "
        "or planted (a random planted lexicon)",
    )
    planted_seed: Seed = Field(0, description="seed of the planted lexicon's words' values (spec: planted)")
    planted_words: Int = Field(200, ge=2, description="size of the planted lexicon (spec: planted)")


class TuneSection(_Section):
    """Fine-tuning a subject against the known reward (TRL); ``algorithm: none`` studies the base model.

    The defaults were measured on SmolLM2-135M against VADER (IMDb prompts, 2 CPU cores): 28 GRPO steps of
    32 completions (4 prompts x 8) with a rank-16 LoRA at learning rate 5e-4 and KL coefficient 0.1 take
    about 17 minutes and raise the held-out reward by about +2.6 with fluent text. Longer runs hack the
    lexicon by repeating "love" (the evaluation's distinct-bigram control shows it).

    By default tuning runs a fixed ``steps``. With ``target_gain`` set it runs against a target instead
    (``steps`` is then unused): every ``eval_every`` steps the current policy and the base model each complete
    ``eval_prompts`` held-out prompts (training-split reviews after the training prompts, so neither trained
    on nor evaluated on), and the paired gain in mean reward gets a bootstrap 95% interval. Tuning stops once
    the interval's lower bound exceeds ``target_gain``, or once the gain has *plateaued* (a heuristic: its
    point estimate has not beaten the best earlier check for 3 checks in a row), or at ``max_steps``. The
    tuned model's manifest records why it stopped and every check's gain with its interval.
    """

    algorithm: Literal["grpo", "rloo", "dpo", "none"] = "grpo"
    steps: Int = Field(28, ge=1, description="optimizer steps (RL) or the cap on DPO steps")
    batch_size: Int = Field(
        32, ge=1, description="completions per optimizer step (RL) / pairs per step (DPO)"
    )
    group_size: Int = Field(8, ge=2, description="completions per prompt in a GRPO/RLOO group")
    beta: Float = Field(0.1, ge=0, description="KL coefficient to the reference (base) model")
    learning_rate: Float = Field(5e-4, gt=0, description="5e-4 suits LoRA; use ~5e-5 for full tuning")
    max_completion_tokens: Int = Field(32, ge=1)
    n_train_prompts: Int = Field(2000, ge=1, description="training prompts, from the train split")
    lora: Bool = Field(True, description="train a LoRA adapter (peft, merged on save), not all weights")
    lora_rank: Int = Field(16, ge=1)
    save_every: Int = Field(10, ge=1, description="checkpoint interval in steps (a killed run resumes there)")
    collapse_drop: Float = Field(3.0, gt=0, description="stop if the running mean reward falls this far")
    dpo_completions_per_prompt: Int = Field(4, ge=2, description="base-model samples scored to build pairs")
    dpo_pairs: Int = Field(256, ge=1)
    dpo_epochs: Int = Field(2, ge=1)
    target_gain: Float | None = Field(
        None,
        description="tune until the held-out gain's 95% lower bound exceeds this (None: run tune.steps)",
    )
    max_steps: Int | None = Field(None, ge=1, description="the cap on steps when tuning against target_gain")
    eval_every: Int | None = Field(None, ge=1, description="steps between held-out checks (target_gain)")
    eval_prompts: Int = Field(32, ge=2, description="held-out prompts each check samples (target_gain)")
    scale_rewards: Literal["group", "batch", "none"] | None = Field(
        None,
        description="GRPO's advantage scaling (TRL's scale_rewards); None keeps TRL's default, 'group' (each "
        "group's rewards divided by their spread); 'none' leaves them in reward units, so the idealised "
        "KL-regularised optimum is pi_base * exp(reward / beta)",
    )
    precision: Precision = Field(
        "float32",
        description="matrix products of the training passes (bfloat16: TrainingArguments' bf16 mixed "
        "precision; auto: bfloat16 where native). float32 by default, as the committed experiments were "
        "tuned; the demo preset asks for auto",
    )

    @model_validator(mode="after")
    def _scale_rewards_is_grpo_only(self) -> TuneSection:
        if self.scale_rewards is not None and self.algorithm != "grpo":
            raise ValueError(
                f"tune.scale_rewards applies to GRPO only, not tune.algorithm={self.algorithm}; remove it"
            )
        return self

    @model_validator(mode="after")
    def _target_settings_go_together(self) -> TuneSection:
        if self.target_gain is None:
            unused = [name for name in ("max_steps", "eval_every") if getattr(self, name) is not None]
            if unused:
                raise ValueError(
                    f"tune.{unused[0]} is used only with tune.target_gain; set tune.target_gain too, or use "
                    "tune.steps for a fixed number of steps"
                )
        elif self.max_steps is None or self.eval_every is None:
            raise ValueError(
                "tune.target_gain needs tune.max_steps (the cap) and tune.eval_every (steps between "
                "checks), e.g. --set tune.max_steps=84 --set tune.eval_every=7"
            )
        elif self.eval_every > self.max_steps:
            raise ValueError(
                f"tune.eval_every ({self.eval_every}) exceeds tune.max_steps ({self.max_steps}): no check "
                "would run; lower tune.eval_every"
            )
        return self

    @property
    def step_cap(self) -> int:
        """The most optimizer steps the run may take: ``max_steps`` against a target, else ``steps``."""
        return self.steps if self.target_gain is None else int(self.max_steps or self.steps)


class ActivationsSection(_Section):
    """The activations the SAEs train on: held-out reviews (an unseen corpus, as in the paper's App. E.2)
    read by the subject model, and by the base model at the same sites for the base-model control."""

    layers: list[Index] | Literal["top-divergence"] = Field(
        "top-divergence", description="layers to cache: the n_layers most changed by tuning, or a list"
    )
    n_layers: Int = Field(3, ge=1, description="how many top-divergence layers (the paper: 5)")
    kinds: list[
        Literal["hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "mlp.hook_post"]
    ] = Field(default_factory=lambda: ["mlp.hook_post"])
    split: Name = Field("train", description="split of data.source the reviews come from")
    n_texts: Int = Field(2000, ge=1, description="reviews whose activations are cached")
    n_held_out_texts: Int = Field(
        100, ge=1, description="other reviews the SAEs are measured on and features are explained on"
    )
    n_table6_texts: Int = Field(
        100,
        ge=1,
        description="a third set of reviews read only by Table 6 (tuned model; none repeats an SAE text or "
        "begins with a prompt)",
    )
    max_length: Int = Field(96, ge=2)
    batch_size: Int = Field(16, ge=1)
    precision: Precision = Field(
        "auto",
        description="matrix products of the passes that cache the activations (auto: bfloat16 where native); "
        "the activations are stored in float32",
    )


class SAESection(_Section):
    """One SAE per cached site, for the subject and for the base model (§4.2, §4.3)."""

    architecture: Literal["relu", "topk"] = "topk"
    expansion: Int = Field(1, ge=1, description="dictionary size / site width (§4.3 uses 1)")
    k: Int = Field(32, ge=1, description="active latents per token (topk)")
    l1_coefficient: Float = Field(1e-3, ge=0, description="L1 penalty (relu)")
    epochs: Int = Field(2, ge=1)
    batch_size: Int = Field(512, ge=1)
    lr: Float = Field(1e-3, gt=0)

    def train_config(self, d_in: int, **extra: Any) -> TrainConfig:
        """The trainer's settings for a site of width ``d_in`` (untied, as SAELens and the TopK papers);
        ``extra`` sets the trainer's other fields (``log_every``, ``device``, ...)."""
        from irmscope.sae.train import TrainConfig

        return TrainConfig(
            d_sae=self.expansion * d_in,
            architecture=self.architecture,
            k=self.k if self.architecture == "topk" else None,
            tied=False,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            l1_coefficient=self.l1_coefficient,
            **extra,
        )


class ElicitSection(_Section):
    """Word-level elicitation of a lexicon reward (§4.3, §5.1) and the token-level implicit reward."""

    n_triples: Int = Field(600, ge=2, description="contrastive triples the regression is fitted on")
    n_contexts: Int = Field(8, ge=1, description="contexts each evaluated word is placed after")
    max_words: Int = Field(600, ge=5, description="held-out lexicon words scored (a seeded sample)")
    held_out_fraction: Float = Field(0.3, gt=0, lt=1, description="share of words never fitted")
    max_context_tokens: Int = Field(48, ge=1)
    n_shift_texts: Int = Field(
        200,
        ge=1,
        description="evaluation samples per model whose every position the policy shift averages over",
    )
    precision: Precision = Field(
        "auto",
        description="matrix products of the passes that read SAE sites at the triples' and evaluated words "
        "(auto: bfloat16 where native); the policy shift's log-probabilities are float32 whatever is set",
    )


class InterpretSection(_Section):
    """Explaining the tuned model's shared SAE features and classifying them as reward-related (§4.4).

    ``explainer: offline`` needs no language model (it is labelled as such in the report); ``chat`` calls
    any OpenAI-compatible API at ``base_url`` with ``model``, its key read from the environment variable
    named by ``api_key_env``.
    """

    explainer: Literal["offline", "chat"] = "offline"
    base_url: Name | None = Field(
        None, description="e.g. https://api.openai.com/v1 or http://localhost:8000/v1"
    )
    model: Name | None = Field(None, description="the chat model, e.g. gpt-4o")
    api_key_env: Name = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    pair_expansion: Int = Field(
        2, ge=1, description="width of each site's second dictionary / site width (the paper's pair)"
    )
    top_k: Int = Field(10, ge=1, description="shared features explained per site")
    n_contexts: Int = Field(8, ge=1, description="top-activating contexts per feature")


class ValidationSection(_Section):
    """Validating the features (§5.2): Table 5 ablates the explainer's reward-related features, features
    chosen by reward attribution and their controls; Table 6 counts how often the related features fire
    where the elicited reward is high."""

    n_ablation_prompts: Int = Field(
        200, ge=1, description="evaluation prompts completed with features ablated (Table 5)"
    )
    threshold: Float = Field(
        3.0,
        description="R's raw output above which a token counts as high-reward (Table 6), in R's training "
        "units: sentiment deltas scaled so the largest training delta is 4, not the [-4, 4] lexicon",
    )
    n_attributed_features: Int = Field(
        32,
        ge=0,
        description="features per site chosen by reward attribution and ablated beside the explainer's "
        "(Table 5; lexicon rewards only; 0: skip)",
    )
    n_attribution_prompts: Int = Field(
        64, ge=1, description="prompts, none of them an evaluation prompt, the attribution is summed over"
    )
    n_random_draws: Int = Field(
        3, ge=1, description="draws of each random-feature control of Table 5 (mean and range reported)"
    )
    base_model_check: Bool = Field(
        True,
        description="also ablate the attributed features (and their opposite) in the untuned base model",
    )


class ProbesSection(_Section):
    """Reward probes on the residual stream, steering along reward directions (the probe study "Do RL'd
    models estimate anticipated rewards?"), and the
    leaderboard of every reward estimate (DPO's implicit reward uses ``tune.beta`` as its beta)."""

    enabled: Bool = Field(True, description="run the probes, steer, attribute and leaderboard stages")
    n_rating_texts: Int = Field(
        600, ge=4, description="reviews the human-ratings probe is fitted and scored on (data.source)"
    )
    max_length: Int = Field(128, ge=2, description="tokens of each review the ratings probe reads")
    test_fraction: Float = Field(0.3, gt=0, lt=1, description="share of texts (prompts) held out")
    max_positions: Int = Field(64, ge=1, description="positions of the error-against-position curve")
    n_steer_prompts: Int = Field(32, ge=1, description="evaluation prompts completed at each scale")
    steer_scales: list[Float] = Field(
        default_factory=lambda: [-0.5, -0.25, 0.0, 0.25, 0.5],
        description="steering scales, in units of the site's typical activation norm",
    )
    n_random_directions: Int = Field(2, ge=0, description="random directions of equal norm per direction")
    n_patch_pairs: Int = Field(
        24, ge=0, description="contrast pairs for activation patching in the attribute stage (0: skip it)"
    )
    bootstrap_resamples: Int = Field(500, ge=10, description="leaderboard bootstrap resamples (over prompts)")
    precision: Precision = Field(
        "auto",
        description="matrix products of the passes the probes read residuals with (the ratings texts, the "
        "error-against-position curve; auto: bfloat16 where native)",
    )
    dpo_model: Name | None = Field(
        None,
        description="another checkpoint of the same base (e.g. DPO-tuned) whose implicit reward also enters "
        "the leaderboard",
    )


class AuditSection(_Section):
    """The blind audit of the tuned model against the base (``irmscope audit``'s code, on the evaluation
    samples, so nothing is sampled twice)."""

    n_prompts: Int = Field(
        200, ge=2, description="evaluation samples audited (the first n; at most data.n_prompts are there)"
    )
    n_resamples: Int = Field(
        1000,
        ge=10,
        description=(
            "bootstrap resamples of each word's intervals (the word table's, the shown count changes') and "
            "of the known-reward comparison's; the completion-level differences use 2000"
        ),
    )
    crosscoder: Bool = Field(True, description="train a model-diffing crosscoder: what changed inside")
    crosscoder_expansion: Int = Field(4, ge=1, description="crosscoder latents / site width")
    crosscoder_k: Int = Field(32, ge=1, description="crosscoder latents active per token")
    crosscoder_epochs: Int = Field(10, ge=1, description="passes over the audited tokens")
    difference_k: Int = Field(
        4, ge=1, description="latents active per token of the dictionary of tuned-minus-base differences"
    )

    def crosscoder_config(self) -> CrosscoderConfig | None:
        """The crosscoder's settings, or None when the audit trains none."""
        from irmscope.sae.crosscoder import CrosscoderConfig

        if not self.crosscoder:
            return None
        return CrosscoderConfig(
            expansion=self.crosscoder_expansion,
            k=self.crosscoder_k,
            epochs=self.crosscoder_epochs,
            difference_k=self.difference_k,
        )


class RunConfig(_Section):
    preset: str = "demo"
    seed: Seed = 0
    out_dir: Name = Field("runs/demo", description="where stages, results.json and the report go")
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    generation: GenerationSection = GenerationSection()
    reward: RewardSection = RewardSection()
    tune: TuneSection = TuneSection()
    activations: ActivationsSection = ActivationsSection()
    sae: SAESection = SAESection()
    elicit: ElicitSection = ElicitSection()
    interpret: InterpretSection = InterpretSection()
    validation: ValidationSection = ValidationSection()
    probes: ProbesSection = ProbesSection()
    audit: AuditSection = AuditSection()


PRESETS: dict[str, dict[str, Any]] = {
    # float32 throughout (generation, activations, elicitation, probes): the tests compare the smoke run's
    # numbers with a stored reference, and "auto" would resolve to another precision on a CPU without native
    # bfloat16
    "smoke": {
        "out_dir": "runs/smoke",
        "model": {"name": "tiny-llama"},
        "data": {"n_prompts": 12, "prefix_tokens": 12},
        "generation": {"max_new_tokens": 8, "batch_size": 6, "precision": "float32"},
        "tune": {
            "steps": 3,
            "batch_size": 4,
            "group_size": 2,
            "max_completion_tokens": 8,
            "n_train_prompts": 16,
            "save_every": 2,
        },
        "activations": {
            "n_layers": 2,
            "n_texts": 40,
            "n_held_out_texts": 8,
            "n_table6_texts": 8,
            "max_length": 32,
            "precision": "float32",
        },
        "sae": {"k": 8, "epochs": 10, "batch_size": 64},
        "elicit": {
            "n_triples": 30,
            "n_contexts": 2,
            "max_words": 40,
            "n_shift_texts": 8,
            "precision": "float32",
        },
        "interpret": {"top_k": 4, "n_contexts": 3},
        "validation": {
            "n_ablation_prompts": 12,
            "threshold": 1.0,
            "n_attributed_features": 4,
            "n_attribution_prompts": 4,
        },
        "probes": {
            "precision": "float32",
            "n_rating_texts": 30,
            "max_length": 24,
            "max_positions": 8,
            "n_steer_prompts": 6,
            "n_patch_pairs": 4,
            "steer_scales": [-0.5, 0.0, 0.5],
            "n_random_directions": 1,
            "bootstrap_resamples": 50,
        },
        "audit": {"n_prompts": 12, "n_resamples": 100},
    },
    # the demo tunes harder for fewer steps than the tune section's defaults (which the committed VADER
    # experiments use): on the demo's own 200 held-out prompts 14 steps at 1.5e-3 gained +4.35 [+3.93,
    # +4.76] in 263 s of tuning, against +3.78 for 20 steps at 1e-3 (353 s), +1.49 for 14 at 1e-3 and
    # +2.61 for the defaults' 28 steps in 570 s, with more reward hacking (KL 0.72 per token, distinct
    # bigrams 0.66 against the base model's 0.91; "love" 383 times in 200 completions). Chosen after those
    # trials (experiments/demo_recipe.py; docs/findings.md). Those 14 steps sit on a knife edge: on another
    # CPU the same recipe gained +2.05, and with bfloat16 training +1.57. The demo trains in bfloat16 where
    # it is native (about 1.3x faster per step here) for 18 steps: on 64 held-out training-split prompts a
    # tuning curve of the same recipe (irmscope tune with checks) read +1.55 at step 15 and +3.57 [+3.16,
    # +3.97] at step 18, in its steep stretch (docs/findings.md says how it was chosen).
    "demo": {"out_dir": "runs/demo", "tune": {"learning_rate": 1.5e-3, "steps": 18, "precision": "auto"}},
    "paper": {
        "out_dir": "runs/paper",
        "data": {"n_prompts": 1000},
        "activations": {"n_layers": 5, "n_texts": 6000},
        "elicit": {"n_triples": 2000, "max_words": 2000},
        # 2,000 reviews of 384 tokens: the ratings probe reached r = 0.80 outside the pipeline
        # (docs/findings.md)
        "probes": {"n_rating_texts": 2000, "max_length": 384},
    },
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def _assign(tree: dict[str, Any], dotted: str, raw: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as JSON when it is valid JSON."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise IrmscopeError(f"--set {dotted}: {part} is not a section")
    try:
        node[leaf] = json.loads(raw)
    except json.JSONDecodeError:
        node[leaf] = raw


def load_config(
    preset: str = "demo", file: str | Path | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """The preset, then the file (JSON or YAML), then ``key.sub=value`` overrides, validated."""
    if preset not in PRESETS:
        raise IrmscopeError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    tree = _merge({"preset": preset}, copy.deepcopy(PRESETS[preset]))  # --set must never edit the preset
    if file is not None:
        tree = _merge(tree, _read_file(Path(file)))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise IrmscopeError(f"--set {item!r} has no '='; write it as section.key=value")
        _assign(tree, key.strip(), value.strip())
    return validate(tree)


def validate(tree: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig`, turning pydantic's report into one line that names the bad key."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        # a union's branch shows up in the location as a type expression ("list[...]"): leave it out
        where = ".".join(str(part) for part in first["loc"] if not any(c in str(part) for c in "[("))
        if first["type"] == "extra_forbidden":
            section = _section_at(first["loc"][:-1])
            raise IrmscopeError(
                f"unknown config key {where!r}; valid keys here: {', '.join(section.model_fields)}"
            ) from None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "value_error" and isinstance(first.get("input"), dict):
            # a rule across a section's keys (a model validator): its message names the keys
            raise IrmscopeError(message) from None
        if first["type"] == "string_pattern_mismatch":
            message = "must not be empty or blank"
        raise IrmscopeError(f"config value {where!r}: {message} (got {first.get('input')!r})") from None


def _section_at(path: tuple) -> type[BaseModel]:
    section: type[BaseModel] = RunConfig
    for part in path:
        annotation = section.model_fields[str(part)].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = annotation
    return section


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file() and not path.is_dir():
        raise IrmscopeError(f"config file {path} does not exist; check the path")
    text = read_text_file(path, "config file")
    try:
        if path.suffix in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parse error becomes one line
        raise IrmscopeError(f"config file {path} could not be parsed: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise IrmscopeError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data
