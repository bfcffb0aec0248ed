"""The stages of an irmscope run, their caching and resumption.

    prompts → tune → evaluate → divergence → activations → report

Every stage goes through :func:`irmscope.stages.run_stage`, so a killed run resumes at the stage it was
in, and changing one setting recomputes only the stages that depend on it. With ``model.tuned`` set, the
given model is studied instead of tuning one; with ``tune.algorithm: none`` only the base model is studied.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import json
import platform
import time
from pathlib import Path
from typing import Any

from irmscope.activations import ActivationStore, cache_activations
from irmscope.config import RunConfig
from irmscope.data import load_reviews, truncate_to_prefixes
from irmscope.io import write_json
from irmscope.models import load_model
from irmscope.models.adapters import site_name
from irmscope.report.run_report import write_run_report
from irmscope.rewards import load_reward
from irmscope.stages import StageResult, run_stage
from irmscope.stats import bootstrap_ci
from irmscope.tune import evaluate_policy, generate_completions, layer_divergence, top_layers, tune_model

_PACKAGES = (
    "irmscope",
    "torch",
    "transformers",
    "trl",
    "peft",
    "safetensors",
    "scikit-learn",
    "scipy",
    "numpy",
    "spacy",
    "vaderSentiment",
    "datasets",
    "matplotlib",
)


def read_json(stage: StageResult, name: str) -> Any:
    return json.loads((stage.dir / name).read_text())


class _Run:
    """One pipeline run: the config, the stage runner, and the models loaded at most once each."""

    def __init__(self, config: RunConfig, progress: bool) -> None:
        self.config = config
        self.progress = progress
        self.root = Path(config.out_dir)
        self.timings: dict[str, float] = {}
        self.stages: list[StageResult] = []

    def stage(self, name: str, settings: dict[str, Any], upstream: list[StageResult], compute) -> StageResult:
        start = time.perf_counter()
        result = run_stage(self.root, name, settings, upstream, compute)
        self.timings[name] = round(time.perf_counter() - start, 2)
        state = "cached" if result.cached else f"done in {self.timings[name]:.1f} s"
        print(f"[irmscope] stage {name}: {state}", flush=True)
        self.stages.append(result)
        return result

    @functools.cached_property
    def base(self):
        return load_model(self.config.model.name, seed=self.config.seed)


def run_pipeline(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every stage for ``config``; returns the content of ``results.json``."""
    run = _Run(config, progress)
    run.root.mkdir(parents=True, exist_ok=True)
    reward = load_reward(config.reward.spec)
    seed = config.seed

    def make_prompts(work: Path) -> dict[str, Any]:
        tokenizer = run.base.tokenizer
        prompts = {}
        for split, n in (("test", config.data.n_prompts), ("train", config.tune.n_train_prompts)):
            if split == "train" and (config.tune.algorithm == "none" or config.model.tuned):
                continue
            reviews = load_reviews(
                config.data.source, split=split if split == "train" else config.data.split, seed=seed
            )
            prompts[split] = truncate_to_prefixes(
                list(reviews["text"]), tokenizer, config.data.prefix_tokens
            )[:n]
        write_json(work / "prompts.json", prompts)
        return {split: len(values) for split, values in prompts.items()}

    prompts = run.stage(
        "prompts",
        {
            "data": config.data.model_dump(),
            "model": config.model.name,
            "seed": seed,
            "n_train": config.tune.n_train_prompts,
        },
        [],
        make_prompts,
    )
    eval_prompts = read_json(prompts, "prompts.json")["test"]

    tuned_spec: str | None = config.model.tuned
    upstream = [prompts]
    if tuned_spec is None and config.tune.algorithm != "none":

        def make_tuned(work: Path) -> dict[str, Any]:
            tuned = tune_model(
                config.model.name,
                reward,
                read_json(prompts, "prompts.json")["train"],
                work,
                config.tune,
                seed=seed,
                reward_spec=config.reward.spec,
                progress=progress,
            )
            return {key: tuned.manifest[key] for key in ("algorithm", "steps_done", "train_seconds")}

        tuned_stage = run.stage(
            "tune",
            {
                "tune": config.tune.model_dump(),
                "reward": config.reward.spec,
                "model": config.model.name,
                "seed": seed,
            },
            [prompts],
            make_tuned,
        )
        tuned_spec = str(tuned_stage.dir / "model")
        upstream = [prompts, tuned_stage]

    if tuned_spec is None:

        def evaluate_base(work: Path) -> dict[str, Any]:
            completions = generate_completions(
                run.base,
                eval_prompts,
                config.generation.max_new_tokens,
                config.generation.batch_size,
                seed=seed,
                progress=progress,
            )
            scores = reward.score([p + c for p, c in zip(eval_prompts, completions, strict=True)])
            write_json(
                work / "samples.json",
                {"prompts": eval_prompts, "base_completions": completions, "base_scores": scores.tolist()},
            )
            return {
                "base_mean_reward": bootstrap_ci(scores, seed=seed).as_dict(),
                "n_prompts": len(eval_prompts),
            }

        evaluation = run.stage(
            "evaluate",
            {"generation": config.generation.model_dump(), "reward": config.reward.spec, "seed": seed},
            upstream,
            evaluate_base,
        )
        divergence = None
    else:
        tuned = load_model(tuned_spec)

        def evaluate(work: Path) -> dict[str, Any]:
            result = evaluate_policy(
                run.base,
                tuned,
                eval_prompts,
                reward,
                config.generation.max_new_tokens,
                config.generation.batch_size,
                seed=seed,
                progress=progress,
            )
            write_json(work / "samples.json", result.pop("samples"))
            return result

        evaluation = run.stage(
            "evaluate",
            {
                "generation": config.generation.model_dump(),
                "reward": config.reward.spec,
                "tuned": tuned_spec if config.model.tuned else None,
                "seed": seed,
            },
            upstream,
            evaluate,
        )

        def divergence_of(work: Path) -> dict[str, Any]:
            per_layer = layer_divergence(run.base, tuned)
            return {"per_layer": per_layer, "top_layers": top_layers(per_layer, config.activations.n_layers)}

        divergence = run.stage(
            "divergence",
            {"tuned": tuned_spec if config.model.tuned else None, "n_layers": config.activations.n_layers},
            upstream,
            divergence_of,
        )

    subject = tuned_spec or config.model.name

    def make_activations(work: Path) -> dict[str, Any]:
        lm = load_model(subject, seed=seed)
        if config.activations.layers == "top-divergence":
            layers = (
                divergence.summary["top_layers"]
                if divergence
                else list(range(lm.n_layers - config.activations.n_layers, lm.n_layers))
            )
        else:
            layers = [layer % lm.n_layers for layer in config.activations.layers]
        sites = [site_name(layer, kind) for layer in sorted(layers) for kind in config.activations.kinds]
        samples = read_json(evaluation, "samples.json")
        completions = samples.get("tuned_completions", samples["base_completions"])
        texts = [p + c for p, c in zip(samples["prompts"], completions, strict=True)]
        store = cache_activations(
            lm,
            texts[: config.activations.n_texts],
            sites,
            work / "cache",
            max_length=config.activations.max_length,
            batch_size=config.activations.batch_size,
            progress=progress,
        )
        return {"sites": sites, "rows": store.n_rows, "model": subject}

    activation_upstream = [evaluation] + ([divergence] if divergence else [])
    activations = run.stage(
        "activations",
        {"activations": config.activations.model_dump(), "subject": config.model.tuned or config.model.name},
        activation_upstream,
        make_activations,
    )

    results = {
        "config": config.model_dump(),
        "subject": {
            "base": config.model.name,
            "tuned": tuned_spec,
            "reward": reward.name,
            "reward_description": reward.description,
        },
        "evaluation": evaluation.summary,
        "divergence": divergence.summary if divergence else None,
        "activations": {**activations.summary, "path": str(ActivationStore(activations.dir / "cache").root)},
        "manifest": {
            "versions": _versions(),
            "seed": seed,
            "stages": {
                s.name: {"key": s.key, "seconds": s.summary.get("stage_seconds"), "cached": s.cached}
                for s in run.stages
            },
            "this_run_seconds": run.timings,
        },
    }
    tune_manifest = None
    if tuned_spec and (Path(tuned_spec) / "irmscope_manifest.json").is_file():
        tune_manifest = json.loads((Path(tuned_spec) / "irmscope_manifest.json").read_text())
        results["tune"] = {k: v for k, v in tune_manifest.items() if k != "curves"}
    write_json(run.root / "results.json", results)
    write_run_report(run.root, results, read_json(evaluation, "samples.json"), tune_manifest)
    print(f"[irmscope] report: {run.root / 'report.html'}  results: {run.root / 'results.json'}", flush=True)
    return results


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
