"""The stages of an irmscope run, their caching and resumption.

    prompts → tune → evaluate → divergence → sites → activations → saes → elicit → interpret → validate
    → probes → steer → attribute → leaderboard → results.json + report

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

import numpy as np

from irmscope.activations import ActivationStore, cache_activations
from irmscope.config import RunConfig
from irmscope.data import load_reviews, truncate_to_prefixes
from irmscope.data.triples import short_contrastive_triples
from irmscope.elicit.reward_study import elicit_lexicon_reward
from irmscope.errors import IrmscopeError
from irmscope.interpret import build_explainer, interpret_features, token_values
from irmscope.io import write_json
from irmscope.leaderboard import METHODS, Coverage, MethodInputs, build_leaderboard
from irmscope.models import load_model
from irmscope.models.adapters import site_name
from irmscope.probes import steering_curves
from irmscope.probes.attribution import reward_attribution
from irmscope.probes.experiment import reward_probe_study, steering_directions
from irmscope.probes.residuals import load_residuals
from irmscope.report.run_report import write_run_report
from irmscope.rewards import LexiconReward, load_reward
from irmscope.rewards.planted import planted_lexicon
from irmscope.sae import load_sae
from irmscope.sae.sites import train_site_saes
from irmscope.stages import StageResult, run_stage
from irmscope.stats import bootstrap_ci
from irmscope.tune import evaluate_policy, generate_completions, layer_divergence, top_layers, tune_model
from irmscope.validate import (
    AttributedSelection,
    ablation_table,
    activation_frequency_table,
    attribute_reward_to_features,
    select_by_attribution,
)

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


#: Training reviews a planted lexicon's word frequencies are counted on (``reward.spec: planted``).
PLANTED_TEXTS = 5000

#: In the settings of every stage that reads reviews: reviews come in a seeded random order (before, the
#: sorted IMDb files gave only negative reviews), so caches made under the old order are never reused.
REVIEW_ORDER = {"review_order": "seeded-shuffle"}
#: interpret settings only the validate stage reads (so changing them never re-explains features)
VALIDATION_ONLY = {"n_ablation_prompts", "threshold", "n_attributed_features", "n_attribution_prompts"}


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
        def announced(work: Path) -> dict[str, Any]:
            print(f"[irmscope] stage {name}: running", flush=True)
            return compute(work)

        start = time.perf_counter()
        result = run_stage(self.root, name, settings, upstream, announced)
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
    seed = config.seed
    reward_stages: list[StageResult] = []
    reward_spec = config.reward.spec
    if reward_spec.strip().lower() == "planted":

        def make_planted(work: Path) -> dict[str, Any]:
            texts = list(
                load_reviews(config.data.source, split="train", limit=PLANTED_TEXTS, seed=seed)["text"]
            )
            lexicon = planted_lexicon(
                texts,
                run.base.tokenizer,
                n_words=config.reward.planted_words,
                seed=config.reward.planted_seed,
            )
            lexicon.to_tsv(work / "planted.tsv")
            return {"n_words": len(lexicon)}

        planted = run.stage(
            "planted-lexicon",
            {"reward": _reward_settings(config), "data": config.data.source, "model": config.model.name},
            [],
            make_planted,
        )
        reward_stages = [planted]
        reward_spec = f"lexicon:{planted.dir / 'planted.tsv'}"
    reward = load_reward(reward_spec)

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
            **REVIEW_ORDER,
        },
        [],
        make_prompts,
    )
    eval_prompts = read_json(prompts, "prompts.json")["test"]

    tuned_spec: str | None = config.model.tuned
    upstream = [prompts, *reward_stages]
    if tuned_spec is None and config.tune.algorithm != "none":

        def make_tuned(work: Path) -> dict[str, Any]:
            tuned = tune_model(
                config.model.name,
                reward,
                read_json(prompts, "prompts.json")["train"],
                work,
                config.tune,
                seed=seed,
                reward_spec=reward_spec,
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
            [prompts, *reward_stages],
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
    sites_stage = run.stage(
        "sites",
        {"activations": config.activations.model_dump(), "subject": config.model.tuned or config.model.name},
        [divergence] if divergence else upstream,
        lambda work: {"sites": _select_sites(config, run.base.n_layers, divergence)},
    )
    sites = sites_stage.summary["sites"]
    corpus = functools.partial(_sae_corpus, config)
    subjects = {"tuned": subject, "base": config.model.name} if tuned_spec else {"base": subject}

    def make_activations(label: str, work: Path) -> dict[str, Any]:
        lm = tuned if label == "tuned" else run.base
        summary = {}
        for part, texts in corpus().items():
            store = cache_activations(
                lm,
                texts,
                sites,
                work / part,
                max_length=config.activations.max_length,
                batch_size=config.activations.batch_size,
                progress=progress,
            )
            summary[f"{part}_rows"] = store.n_rows
        return {**summary, "sites": sites, "model": subjects[label]}

    act_settings = {
        "activations": config.activations.model_dump(),
        "data": config.data.source,
        "seed": seed,
        **REVIEW_ORDER,
    }
    activations = {
        label: run.stage(
            f"activations-{label}",
            {
                **act_settings,
                "model": config.model.tuned if label == "tuned" else config.model.name,
                "sites": sites,
            },
            [sites_stage] if label == "tuned" else [],  # the tuned model's identity comes through the sites
            functools.partial(make_activations, label),
        )
        for label in subjects
    }

    def make_saes(label: str, work: Path) -> dict[str, Any]:
        held_out = ActivationStore(activations[label].dir / "held_out")
        _, metrics = train_site_saes(
            ActivationStore(activations[label].dir / "train"),
            config.sae.train_config,
            work,
            held_out={site: held_out.read_all(site) for site in sites},
            seed=seed,
            progress=progress,
            held_out_positions=held_out.read_meta("position"),
        )
        return {"metrics": metrics}

    saes = {
        label: run.stage(
            f"saes-{label}",
            {"sae": config.sae.model_dump(), "seed": seed},
            [activations[label]],
            functools.partial(make_saes, label),
        )
        for label in subjects
    }

    elicitation = None
    if tuned_spec and isinstance(reward, LexiconReward):

        def make_elicitation(work: Path) -> dict[str, Any]:
            texts = list(load_reviews(config.data.source, split=config.data.split, seed=seed + 1)["text"])
            result = elicit_lexicon_reward(
                tuned,
                run.base,
                {site: load_sae(saes["tuned"].dir / site) for site in sites},
                {site: load_sae(saes["base"].dir / site) for site in sites},
                reward.lexicon,
                texts,
                _shift_texts(read_json(evaluation, "samples.json"), config.elicit.n_shift_texts),
                n_triples=config.elicit.n_triples,
                n_contexts=config.elicit.n_contexts,
                max_words=config.elicit.max_words,
                held_out_fraction=config.elicit.held_out_fraction,
                max_context_tokens=config.elicit.max_context_tokens,
                seed=seed,
            )
            for label in ("tuned", "base"):  # R itself is numpy: kept beside the JSON, for validation
                regressions = result[label].pop("regressions")
                np.savez(
                    work / f"regression-{label}.npz",
                    **{f"{v}_coef": r["coef"] for v, r in regressions.items()},
                    **{f"{v}_intercept": np.float64(r["intercept"]) for v, r in regressions.items()},
                )
            write_json(work / "elicitation.json", result)
            return {"tuned": result["tuned"]["agreement"], "base": result["base"]["agreement"]}

        elicitation = run.stage(
            "elicit",
            # outputs 2: the stage also writes R's coefficients (regression-*.npz) for validation;
            # contexts 2: words are scored after review openings, not after triple prefixes (a leak);
            # policy_shift 2: two estimates, scored on the held-out words and on every word
            {
                "elicit": config.elicit.model_dump(),
                "reward": _reward_settings(config),
                "seed": seed,
                "outputs": 2,
                "contexts": 2,
                "policy_shift": 2,
                "statistics": 2,  # lemma-grouped held-out words, word-fold penalties, permutation nulls, gaps
                **REVIEW_ORDER,
            },
            [saes["tuned"], saes["base"], evaluation],
            make_elicitation,
        )

    interpretation = validation = None
    if tuned_spec:
        interpret_settings = config.interpret

        def make_interpretation(work: Path) -> dict[str, Any]:
            train = ActivationStore(activations["tuned"].dir / "train")
            held_out = ActivationStore(activations["tuned"].dir / "held_out")
            pair_settings = config.sae.model_copy(update={"expansion": interpret_settings.pair_expansion})
            pair_saes, pair_metrics = train_site_saes(
                train,
                pair_settings.train_config,
                work / "pair-saes",
                held_out={site: held_out.read_all(site) for site in sites},
                seed=seed + 100,
                progress=progress,
                held_out_positions=held_out.read_meta("position"),
            )
            result = interpret_features(
                {site: load_sae(saes["tuned"].dir / site) for site in sites},
                pair_saes,
                held_out,
                tuned.tokenizer,
                reward.lexicon if isinstance(reward, LexiconReward) else None,
                reward.description,
                build_explainer(
                    interpret_settings.explainer,
                    interpret_settings.base_url,
                    interpret_settings.model,
                    interpret_settings.api_key_env,
                ),
                top_k=interpret_settings.top_k,
                n_contexts=interpret_settings.n_contexts,
            )
            result["pair_saes"] = pair_metrics
            write_json(work / "interpretation.json", result)
            return {key: result[key] for key in ("explainer", "n_explained", "n_related", "related")}

        interpretation = run.stage(
            "interpret",
            {
                "interpret": config.interpret.model_dump(exclude=VALIDATION_ONLY),
                "sae": config.sae.model_dump(),
                "reward": _reward_settings(config),
                "seed": seed,
            },
            [saes["tuned"]],
            make_interpretation,
        )

        def make_validation(work: Path) -> dict[str, Any]:
            samples = read_json(evaluation, "samples.json")
            n = min(interpret_settings.n_ablation_prompts, len(samples["prompts"]))
            related = interpretation.summary["related"]
            tuned_saes = {site: load_sae(saes["tuned"].dir / site) for site in sites}
            attributed = None
            if interpret_settings.n_attributed_features and isinstance(reward, LexiconReward):
                attributed = _attributed_selection(
                    config, tuned, tuned_saes, reward, samples["prompts"], progress
                )
            result: dict[str, Any] = {
                "table5": ablation_table(
                    tuned,
                    tuned_saes,
                    related,
                    samples["prompts"][:n],
                    reward,
                    np.asarray(samples["tuned_scores"][:n]),
                    config.generation.max_new_tokens,
                    config.generation.batch_size,
                    seed=seed,
                    progress=progress,
                    attributed=attributed,
                    base=np.asarray(samples["base_scores"][:n]),
                ),
                "base_mean_reward": bootstrap_ci(samples["base_scores"][:n], seed=seed).as_dict(),
            }
            if elicitation is not None:
                fitted = np.load(elicitation.dir / "regression-tuned.npz")
                held_out = ActivationStore(activations["tuned"].dir / "held_out")
                result["table6"] = {
                    variant: activation_frequency_table(
                        tuned_saes,
                        held_out,
                        fitted[f"{variant}_coef"],
                        float(fitted[f"{variant}_intercept"]),
                        related,
                        interpret_settings.threshold,
                    )
                    for variant in ("faithful", "ridge-delta")
                }
            write_json(work / "validation.json", result)
            return {"n_ablated": sum(len(f) for f in related.values())}

        validation = run.stage(
            "validate",
            {
                "n_ablation_prompts": interpret_settings.n_ablation_prompts,
                "threshold": interpret_settings.threshold,
                "n_attributed_features": interpret_settings.n_attributed_features,
                "n_attribution_prompts": interpret_settings.n_attribution_prompts,
                "attributed_positions": "completion",  # summed over completion positions only
                "data": config.data.model_dump(),
                **REVIEW_ORDER,
                "generation": config.generation.model_dump(),
                "seed": seed,
            },
            [interpretation, evaluation, *([elicitation] if elicitation else [])],
            make_validation,
        )

    probes = steering = attribution = leaderboard = None
    if tuned_spec and config.probes.enabled:
        probe_settings = config.probes
        coverage = Coverage.from_samples(read_json(evaluation, "samples.json"))

        def make_probes(work: Path) -> dict[str, Any]:
            result = reward_probe_study(
                {"tuned": tuned, "base": run.base},
                coverage,
                load_reviews(config.data.source, split=config.data.split, seed=seed + 2),
                probe_settings,
                work,
                seed=seed,
                progress=progress,
            )
            write_json(work / "probes.json", result)
            return {
                f"{target}_{label}": result[target][label]["best"]["pearson"]["value"]
                for target in ("reward", "ratings")
                if result.get(target)
                for label in ("tuned", "base")
            }

        probes = run.stage(
            "probes",
            {
                "probes": probe_settings.model_dump(
                    include={"n_rating_texts", "max_length", "test_fraction", "max_positions"}
                ),
                "data": config.data.source,
                "seed": seed,
                # outputs 2: selection by folds of whole prompts; coverage read-outs saved for other methods
                "outputs": 2,
                **REVIEW_ORDER,
            },
            [evaluation],
            make_probes,
        )

        def make_steering(work: Path) -> dict[str, Any]:
            directions = steering_directions(
                probes.dir,
                read_json(interpretation, "interpretation.json"),
                {site: load_sae(saes["tuned"].dir / site) for site in sites},
            )
            samples = read_json(evaluation, "samples.json")
            result = steering_curves(
                tuned,
                run.base,
                directions,
                samples["prompts"][: probe_settings.n_steer_prompts],
                reward,
                probe_settings.steer_scales,
                probe_settings.n_random_directions,
                config.generation.max_new_tokens,
                config.generation.batch_size,
                seed=seed,
                progress=progress,
            )
            write_json(work / "steering.json", result)
            return {"directions": list(directions)}

        steering = run.stage(
            "steer",
            {
                "probes": probe_settings.model_dump(
                    include={"n_steer_prompts", "steer_scales", "n_random_directions"}
                ),
                "generation": config.generation.model_dump(),
                "seed": seed,
            },
            [probes, interpretation, saes["tuned"]],
            make_steering,
        )

        def make_attribution(work: Path) -> dict[str, Any]:
            lexicon = reward.lexicon if isinstance(reward, LexiconReward) else None
            triples = (
                short_contrastive_triples(
                    list(load_reviews(config.data.source, split=config.data.split, seed=seed + 1)["text"]),
                    lexicon,
                    run.base.tokenizer,
                    probe_settings.n_patch_pairs,
                    seed,
                )
                if lexicon is not None and probe_settings.n_patch_pairs
                else []
            )
            result = reward_attribution(
                {"tuned": tuned, "base": run.base},
                coverage.prompts,
                coverage.completions,
                coverage.true,
                coverage.prompt_index,
                {
                    label: load_residuals(probes.dir / f"coverage_residuals-{label}.npz")
                    for label in ("tuned", "base")
                },
                triples,
                probe_settings.test_fraction,
                seed,
                progress=progress,
            )
            write_json(work / "attribution.json", result)
            return {label: result[label]["total"] for label in ("tuned", "base")}

        attribution = run.stage(
            "attribute",
            {
                "n_patch_pairs": probe_settings.n_patch_pairs,
                "test_fraction": probe_settings.test_fraction,
                "reward": _reward_settings(config),
                "data": config.data.source,
                "seed": seed,
                **REVIEW_ORDER,
            },
            [probes, evaluation],
            make_attribution,
        )

        def make_leaderboard(work: Path) -> dict[str, Any]:
            finished = {"probes": probes.dir, **({"elicit": elicitation.dir} if elicitation else {})}
            others = {"dpo": load_model(probe_settings.dpo_model)} if probe_settings.dpo_model else {}
            reviews = load_reviews(config.data.source, split=config.data.split, seed=seed + 1)
            inputs = MethodInputs(
                coverage,
                tuned,
                run.base,
                finished,
                config.tune.beta,
                seed,
                others,
                lexicon=reward.lexicon if isinstance(reward, LexiconReward) else None,
                review_texts=list(reviews["text"]),
            )
            result = build_leaderboard(inputs, n_resamples=probe_settings.bootstrap_resamples)
            write_json(work / "leaderboard.json", result)
            return {"methods": [row["method"] for row in result["rows"]]}

        leaderboard = run.stage(
            "leaderboard",
            {
                "bootstrap_resamples": probe_settings.bootstrap_resamples,
                "beta": config.tune.beta,
                "seed": seed,
                "methods": sorted(METHODS),  # a new method module recomputes the board
                "dpo_model": probe_settings.dpo_model,
                "data": config.data.source,  # reviews to cut contrast pairs from
                **REVIEW_ORDER,
            },
            [probes, evaluation, *([elicitation] if elicitation else [])],
            make_leaderboard,
        )

    results = {
        "config": config.model_dump(),
        "subject": {
            "base": config.model.name,
            "tuned": tuned_spec,
            "reward": reward.name,
            "reward_description": reward.description,
        },
        "evaluation": _outputs(evaluation),
        "divergence": _outputs(divergence) if divergence else None,
        "sites": sites,
        "activations": {label: _outputs(stage) for label, stage in activations.items()},
        "saes": {label: stage.summary["metrics"] for label, stage in saes.items()},
        "elicitation": read_json(elicitation, "elicitation.json") if elicitation else None,
        "interpretation": read_json(interpretation, "interpretation.json") if interpretation else None,
        "validation": read_json(validation, "validation.json") if validation else None,
        "probes": read_json(probes, "probes.json") if probes else None,
        "steering": read_json(steering, "steering.json") if steering else None,
        "attribution": read_json(attribution, "attribution.json") if attribution else None,
        "leaderboard": read_json(leaderboard, "leaderboard.json") if leaderboard else None,
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


def _attributed_selection(
    config: RunConfig,
    tuned,
    saes: dict[str, Any],
    reward: LexiconReward,
    evaluation_prompts: list[str],
    progress: bool,
) -> AttributedSelection:
    """Table 5's attributed selection, summed over the tuned model's completions to review prefixes that
    are not evaluation prompts, so the selection never sees the completions the ablation is measured on.

    The prefixes come from the evaluation split in the prompts stage's order and are cut the same way (the
    tuned model shares the base model's tokenizer), so an evaluation prompt is recognised by its text.
    """
    settings = config.interpret
    reviews = load_reviews(config.data.source, split=config.data.split, seed=config.seed)
    held, texts, n = set(evaluation_prompts), list(reviews["text"]), settings.n_attribution_prompts
    prompts: list[str] = []
    chunk = len(held) + 2 * n + 64  # reviews too short for a prefix are dropped, so read on until enough
    for start in range(0, len(texts), chunk):
        prefixes = truncate_to_prefixes(
            texts[start : start + chunk], tuned.tokenizer, config.data.prefix_tokens
        )
        prompts += [p for p in prefixes if p not in held]
        if len(prompts) >= n:
            break
    prompts = prompts[:n]
    if not prompts:
        raise IrmscopeError(
            f"{config.data.source} has no review left once the evaluation prompts are set aside; use a "
            "larger source or set interpret.n_attributed_features=0"
        )
    completions = generate_completions(
        tuned,
        prompts,
        config.generation.max_new_tokens,
        config.generation.batch_size,
        seed=config.seed,
        progress=progress,
        desc="completions to attribute",
    )
    scores = attribute_reward_to_features(
        tuned,
        saes,
        prompts,
        completions,
        token_values(tuned.tokenizer, reward.lexicon),
        progress=progress,
    )
    return select_by_attribution(scores, settings.n_attributed_features)


def _shift_texts(samples: dict[str, Any], n: int) -> list[str]:
    """Prompt + completion texts of both models: the states the policy shift is averaged over."""
    return [
        prompt + completion
        for key in ("base_completions", "tuned_completions")
        for prompt, completion in list(zip(samples["prompts"], samples[key], strict=True))[:n]
    ]


def _outputs(stage: StageResult) -> dict[str, Any]:
    """A stage's summary without its bookkeeping (settings, timing), for results.json."""
    return {k: v for k, v in stage.summary.items() if k not in ("settings", "stage_seconds")}


def _select_sites(config: RunConfig, n_layers: int, divergence: StageResult | None) -> list[str]:
    """The sites to study: the top-divergence layers (the last layers without a tuned model) or a list."""
    acts = config.activations
    if acts.layers == "top-divergence":
        layers = (
            divergence.summary["top_layers"]
            if divergence
            else list(range(n_layers - acts.n_layers, n_layers))
        )
    else:
        layers = [layer % n_layers for layer in acts.layers]
    return [site_name(layer, kind) for layer in sorted(layers) for kind in acts.kinds]


def _sae_corpus(config: RunConfig) -> dict[str, list[str]]:
    """Reviews the SAEs train on and others they are measured on (disjoint, seeded)."""
    acts = config.activations
    n = acts.n_texts + acts.n_held_out_texts
    texts = list(load_reviews(config.data.source, split=acts.split, seed=config.seed)["text"])[:n]
    if len(texts) < 2:
        raise IrmscopeError(f"{config.data.source} ({acts.split}) has too few reviews to train SAEs on")
    cut = max(1, min(acts.n_texts, len(texts) - acts.n_held_out_texts, len(texts) - 1))
    return {"train": texts[:cut], "held_out": texts[cut:]}


def _reward_settings(config: RunConfig) -> dict[str, Any]:
    return config.reward.model_dump()
