"""The stages of an irmscope run, their caching and resumption.

    prompts → completions (base model) → rewards → activations → report

Every stage goes through :func:`irmscope.stages.run_stage`, so a killed run resumes at the stage it was
in, and changing one setting recomputes only the stages that depend on it. Later stages (tuning, SAEs,
elicitation, validation) plug into the same chain.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.activations import ActivationStore, cache_activations
from irmscope.config import RunConfig
from irmscope.data import load_reviews, truncate_to_prefixes
from irmscope.io import write_json
from irmscope.models import load_model
from irmscope.models.adapters import site_name
from irmscope.report import Section, write_report
from irmscope.report.plots import reward_histogram
from irmscope.rewards import load_reward
from irmscope.stages import StageResult, run_stage
from irmscope.stats import bootstrap_ci
from irmscope.tune import generate_completions

_PACKAGES = (
    "irmscope",
    "torch",
    "transformers",
    "trl",
    "safetensors",
    "scikit-learn",
    "scipy",
    "numpy",
    "spacy",
    "vaderSentiment",
    "datasets",
    "matplotlib",
)


def _read_json(stage: StageResult, name: str) -> Any:
    return json.loads((stage.dir / name).read_text())


def run_pipeline(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every stage for ``config``; returns the content of ``results.json``."""
    root = Path(config.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    lm_loader = functools.cache(lambda: load_model(config.model.name, seed=config.seed))
    timings: dict[str, float] = {}

    def stage(name: str, settings: dict[str, Any], upstream: list[StageResult], compute) -> StageResult:
        start = time.perf_counter()
        result = run_stage(root, name, settings, upstream, compute)
        timings[name] = round(time.perf_counter() - start, 2)
        state = "cached" if result.cached else f"done in {timings[name]:.1f} s"
        print(f"[irmscope] stage {name}: {state}", flush=True)
        return result

    def make_prompts(work: Path) -> dict[str, Any]:
        reviews = load_reviews(
            config.data.source, split=config.data.split, seed=config.seed, limit=config.data.n_prompts * 3
        )
        prompts = truncate_to_prefixes(
            list(reviews["text"]), lm_loader().tokenizer, config.data.prefix_tokens
        )
        prompts = prompts[: config.data.n_prompts]
        write_json(work / "prompts.json", prompts)
        return {"n_prompts": len(prompts)}

    prompts = stage(
        "prompts",
        {"data": config.data.model_dump(), "model": config.model.name, "seed": config.seed},
        [],
        make_prompts,
    )

    def make_completions(work: Path) -> dict[str, Any]:
        completions = generate_completions(
            lm_loader(),
            _read_json(prompts, "prompts.json"),
            seed=config.seed,
            progress=progress,
            **config.generation.model_dump(),
        )
        write_json(work / "completions.json", completions)
        return {"n_completions": len(completions)}

    completions = stage(
        "completions",
        {"generation": config.generation.model_dump(), "model": config.model.name, "seed": config.seed},
        [prompts],
        make_completions,
    )

    reward = load_reward(config.reward.spec)

    def score(work: Path) -> dict[str, Any]:
        texts = [
            p + c
            for p, c in zip(
                _read_json(prompts, "prompts.json"), _read_json(completions, "completions.json"), strict=True
            )
        ]
        scores = reward.score(texts)
        write_json(work / "scores.json", scores.tolist())
        return {"mean_reward": bootstrap_ci(scores, seed=config.seed).as_dict()}

    rewards = stage("rewards", {"reward": config.reward.spec}, [completions], score)

    def make_activations(work: Path) -> dict[str, Any]:
        lm = lm_loader()
        layers = sorted({layer % lm.n_layers for layer in config.activations.layers})
        sites = [site_name(layer, kind) for layer in layers for kind in config.activations.kinds]
        texts = [
            p + c
            for p, c in zip(
                _read_json(prompts, "prompts.json"), _read_json(completions, "completions.json"), strict=True
            )
        ]
        store = cache_activations(
            lm,
            texts[: config.activations.n_texts],
            sites,
            work / "cache",
            max_length=config.activations.max_length,
            batch_size=config.activations.batch_size,
            progress=progress,
        )
        return {"sites": sites, "rows": store.n_rows}

    activations = stage(
        "activations",
        {"activations": config.activations.model_dump(), "model": config.model.name},
        [completions],
        make_activations,
    )

    results = _results(config, prompts, completions, rewards, activations, timings)
    write_json(root / "results.json", results)
    _write_html(
        root,
        config,
        results,
        reward.name,
        np.asarray(_read_json(rewards, "scores.json")),
        _read_json(prompts, "prompts.json"),
        _read_json(completions, "completions.json"),
    )
    print(f"[irmscope] report: {root / 'report.html'}  results: {root / 'results.json'}", flush=True)
    return results


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _results(
    config: RunConfig,
    prompts: StageResult,
    completions: StageResult,
    rewards: StageResult,
    activations: StageResult,
    timings: dict[str, float],
) -> dict[str, Any]:
    store = ActivationStore(activations.dir / "cache")
    return {
        "config": config.model_dump(),
        "base_model": {
            "reward": config.reward.spec,
            "mean_reward": rewards.summary["mean_reward"],
            "n_completions": completions.summary["n_completions"],
        },
        "activations": {"sites": store.sites, "rows": store.n_rows, "path": str(store.root)},
        "manifest": {
            "versions": _versions(),
            "seed": config.seed,
            "stages": {
                s.name: {"key": s.key, "seconds": s.summary.get("stage_seconds")}
                for s in (prompts, completions, rewards, activations)
            },
            "this_run_seconds": timings,
        },
    }


def _write_html(
    root: Path,
    config: RunConfig,
    results: dict[str, Any],
    reward_name: str,
    scores: np.ndarray,
    prompts: list[str],
    completions: list[str],
) -> None:
    mean = results["base_model"]["mean_reward"]
    order = np.argsort(scores)
    examples = [[f"{scores[i]:+.2f}", prompts[i], completions[i]] for i in (*order[:3], *order[-3:])]
    sections = [
        Section(
            "Base model reward",
            paragraphs=[
                f"Mean {reward_name} reward of {len(scores)} sampled completions "
                f"({config.generation.max_new_tokens} tokens) to {config.data.prefix_tokens}-token "
                f"prompts from {config.data.source}: {mean['value']:.3f} "
                f"(95% bootstrap CI {mean['low']:.3f} to {mean['high']:.3f})."
            ],
            tables=[("Lowest- and highest-reward completions", ["reward", "prompt", "completion"], examples)],
            figures=[
                (
                    "Distribution of the reward over completions",
                    reward_histogram({"base": scores}, reward_name),
                )
            ],
        ),
        Section(
            "Activation cache",
            paragraphs=[
                f"{results['activations']['rows']} token rows cached at "
                f"{len(results['activations']['sites'])} sites: " + ", ".join(results["activations"]["sites"])
            ],
        ),
        Section(
            "Run manifest",
            tables=[
                (
                    "Package versions",
                    ["package", "version"],
                    [[k, v] for k, v in results["manifest"]["versions"].items()],
                ),
                (
                    "Stages",
                    ["stage", "key", "seconds to compute"],
                    [
                        [k, v["key"], v["seconds"] if v["seconds"] is not None else "-"]
                        for k, v in results["manifest"]["stages"].items()
                    ],
                ),
            ],
        ),
    ]
    write_report(
        root / "report.html",
        f"irmscope report: {config.model.name}",
        sections,
        subtitle=f"preset {config.preset}, seed {config.seed}",
    )
