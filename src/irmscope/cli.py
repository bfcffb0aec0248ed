"""The ``irmscope`` command line (typer). Every user error prints one line and exits with status 2."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from irmscope.errors import IrmscopeError
from irmscope.locking import ACTIVATION_CACHE, AUDIT_FOLDER, RUN_FOLDER, SAE_FOLDER, refuse_if_locked
from irmscope.validation import check_output, check_utf8, env_int, finite, read_text_file

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Elicit the implicit reward model of an RL-fine-tuned language model.",
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect run configurations.")
app.add_typer(config_app, name="config")


def _finite(param: typer.CallbackParam, value: float | None) -> float | None:
    """Reject NaN and infinity, which click's ranges let through (every comparison with NaN is false)."""
    return None if value is None else finite(value, param.opts[0])


def _positive(param: typer.CallbackParam, value: float | None) -> float | None:
    """A finite number above 0 (a learning rate, an asked gain)."""
    if value is not None and not finite(value, param.opts[0]) > 0:
        raise IrmscopeError(f"{param.opts[0]} must be above 0, not {value}")
    return value


def _named(param: typer.CallbackParam, value: str | None) -> str | None:
    """Reject an empty or blank name (a model, dataset, reward or split): it names nothing."""
    if value is not None and not value.strip():
        raise IrmscopeError(f"{param.opts[0]} is empty; give a name")
    return value


OverwriteOpt = Annotated[bool, typer.Option(help="replace an output that already exists")]
SeedOpt = Annotated[int, typer.Option(min=0, help="random seed (a whole number, at least 0)")]
ModelOpt = Annotated[str, typer.Option(callback=_named, help="model name, folder or hub id")]
DataOpt = Annotated[
    str, typer.Option(callback=_named, help="reviews: rotten-tomatoes, a file/folder, or a hub id")
]
RewardOpt = Annotated[
    str, typer.Option("--reward", "-r", callback=_named, help="vader, lexicon:PATH.tsv, classifier:DIR")
]
PresetOpt = Annotated[str, typer.Option("--preset", "-p", help="smoke, demo or paper")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="JSON or YAML file of overrides")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override one value: section.key=value")
]
# the options of the commands that compare a tuned model with its base on held-out prompts
TunedOpt = Annotated[str, typer.Option(callback=_named, help="the tuned model (folder)")]
BaseOpt = Annotated[str, typer.Option(callback=_named, help="its base model")]
TestDataOpt = Annotated[str, typer.Option(callback=_named, help="prompt source (test split)")]
CompletionTokensOpt = Annotated[int, typer.Option(min=1)]
PrefixTokensOpt = Annotated[int, typer.Option(min=1)]


@app.command()
def models() -> None:
    """List the models irmscope can load without a network (plus: any local folder or hub id)."""
    from irmscope.models import available_models

    rows = available_models()
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        typer.echo(f"{row['name']:<{width}}  {row['kind']:<28}  installed: {row['installed']}")
        typer.echo(f"{'':<{width}}  {row['description']} [{row['license']}]")
    typer.echo("Also accepted: a local Hugging Face folder, or a hub id owner/name (needs a network).")


@app.command()
def reward(
    texts: Annotated[
        list[str] | None, typer.Argument(help="texts to score; - reads them from standard input, one a line")
    ] = None,
    spec: RewardOpt = "vader",
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="read texts from this file, one a line (- : stdin)")
    ] = None,
    explain: Annotated[bool, typer.Option(help="show the lexicon words behind each score")] = False,
) -> None:
    """Print the reward of each text (default: the paper's Eq. 3 VADER reward)."""
    from irmscope.rewards import LexiconReward, load_reward

    scorer = load_reward(spec)
    texts = _texts(texts or [], file)
    for text, value in zip(texts, scorer.score(texts), strict=True):
        line = f"{value:.4f}" if len(texts) == 1 else f"{value:.4f}\t{text}"
        if explain and isinstance(scorer, LexiconReward):
            words = ", ".join(f"{w} {v:+g}" for w, v in scorer.token_values(text))
            line += f"\t[{words or 'no lexicon words'}]"
        typer.echo(line)


def _texts(args: list[str], file: str | None) -> list[str]:
    """The texts given as arguments, each ``-`` replaced by the lines of standard input, then the lines
    of ``file``; blank lines are skipped."""
    texts: list[str] = []
    for arg in [*args, *([] if file is None else [None])]:
        if arg is not None and arg != "-":
            texts.append(arg)
            continue
        source = file if arg is None else "-"
        if source == "-":
            try:
                text = sys.stdin.read().removeprefix("\ufeff")
            except UnicodeDecodeError:
                raise IrmscopeError("standard input is not UTF-8 text; convert it to UTF-8") from None
        else:
            text = read_text_file(source, "text file")
        texts += [line for line in text.splitlines() if line.strip()]
    if not texts:
        raise IrmscopeError("no texts to score; give texts, --file PATH, or - to read standard input")
    return texts


@app.command("train-classifier")
def train_classifier(
    data: Annotated[
        str, typer.Option(callback=_named, help="labelled reviews: a file/folder, imdb, rotten-tomatoes")
    ] = "rotten-tomatoes",
    out: Annotated[Path | None, typer.Option(help="output folder")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="use at most this many reviews")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train the Appendix F classifier reward (TF-IDF + logistic regression), saved without pickle."""
    from irmscope.rewards import default_classifier_dir

    out = check_output(out or default_classifier_dir(), overwrite, "folder")
    _check_names(sources=[data])
    from irmscope.rewards.classifier import train_on_reviews

    trained = train_on_reviews(data, out, limit)
    accuracy, n_test = trained["accuracy"], trained["n_test"]
    typer.echo(f"saved to {trained['path']}; held-out accuracy {accuracy:.3f} on {n_test} reviews")


@app.command("planted-lexicon")
def planted_lexicon_cmd(
    out: Annotated[Path, typer.Option(help="where to write the lexicon (word<TAB>value TSV)")],
    seed: SeedOpt = 0,
    n_words: Annotated[int, typer.Option(min=2, help="number of words to plant values on")] = 200,
    data: Annotated[
        str, typer.Option(callback=_named, help="corpus whose frequent words are used")
    ] = "rotten-tomatoes",
    n_texts: Annotated[int, typer.Option(min=1, help="texts to count word frequencies in")] = 5000,
    model: Annotated[
        str, typer.Option(callback=_named, help="model whose tokenizer decides single-token words")
    ] = "smollm2-135m",
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a reward the base model cannot know: random values on frequent sentiment-neutral words."""
    check_output(out, overwrite, "file")
    _check_names([model], [data])
    from irmscope.models import load_tokenizer
    from irmscope.rewards.planted import planted_lexicon_of_reviews

    lexicon = planted_lexicon_of_reviews(
        data, load_tokenizer(model), n_words=n_words, seed=seed, n_texts=n_texts
    )
    lexicon.to_tsv(out)
    shown = ", ".join(f"{w} {v:+.1f}" for w, v in list(lexicon.items())[:8])
    typer.echo(f"wrote {len(lexicon)} words to {out} ({shown}, ...); tune with --reward lexicon:{out}")


@app.command("cache-activations")
def cache_activations_cmd(
    out: Annotated[Path, typer.Option(help="output folder (resumes if it holds the same cache)")],
    *,
    model: ModelOpt = "smollm2-135m",
    data: DataOpt = "rotten-tomatoes",
    split: Annotated[str, typer.Option(callback=_named)] = "test",
    sites: Annotated[list[str] | None, typer.Option(help="hook site, e.g. blocks.3.mlp.hook_post")] = None,
    n_texts: Annotated[int, typer.Option(min=1)] = 500,
    max_length: Annotated[int, typer.Option(min=1, help="tokens of each text cached")] = 128,
    positions: Annotated[str, typer.Option(help="all (every token) or last (each text's last)")] = "all",
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    overwrite: Annotated[
        bool, typer.Option(help="discard the activation cache the folder holds and start afresh")
    ] = False,
) -> None:
    """Stream a model's activations over a dataset into safetensors shards (a rerun resumes)."""
    if positions not in ("all", "last"):
        raise IrmscopeError(f"--positions must be 'all' or 'last', not {positions!r}")
    _check_names([model], [data])
    _refuse_if_in_use(out, ACTIVATION_CACHE, whole_folder=False)
    from irmscope.activations.caching import cache_review_activations
    from irmscope.distributed import is_main

    store = cache_review_activations(
        out,
        model=model,
        data=data,
        split=split,
        n_texts=n_texts,
        sites=sites,
        positions=positions,
        max_length=max_length,
        batch_size=batch_size,
        overwrite=overwrite,
    )
    if is_main():
        typer.echo(f"{store.n_rows} rows at {len(store.sites)} sites in {store.root}")


@app.command("train-sae")
def train_sae_cmd(
    cache: Annotated[
        Path, typer.Option(help="an activation cache folder (cache-activations or a run stage)")
    ],
    *,
    site: Annotated[str, typer.Option(help="the cached site, e.g. blocks.25.mlp.hook_post")],
    out: Annotated[Path, typer.Option(help="output folder (SAELens layout)")],
    expansion: Annotated[int, typer.Option(min=1, help="dictionary size / site width")] = 4,
    architecture: Annotated[str, typer.Option(help="topk or relu")] = "topk",
    k: Annotated[int, typer.Option(min=1)] = 64,
    l1_coefficient: Annotated[float, typer.Option(min=0, callback=_finite)] = 1e-3,
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 512,
    lr: Annotated[float, typer.Option(callback=_positive)] = 1e-3,
    aux_k_coefficient: Annotated[
        float,
        typer.Option(
            min=0,
            callback=_finite,
            help="TopK: weight of Gao et al.'s AuxK loss that revives dead latents (they used 1/32; 0 = off)",
        ),
    ] = 0.0,
    model: Annotated[
        str | None, typer.Option(callback=_named, help="measure the spliced LM loss on this model")
    ] = None,
    data: Annotated[
        str, typer.Option(callback=_named, help="held-out texts for the metrics")
    ] = "rotten-tomatoes",
    n_texts: Annotated[int, typer.Option(min=1, help="held-out texts for the metrics")] = 100,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train one SAE on a cached site; report FVU, L0, dead latents and (with --model) the spliced loss."""
    _check_names([model], [data])
    _refuse_if_in_use(out, SAE_FOLDER, whole_folder=False)
    from irmscope.config import validate
    from irmscope.distributed import is_main
    from irmscope.locking import output_lock
    from irmscope.sae.report import train_and_report

    # one job per SAE folder; under torchrun every rank trains the same SAE, and rank 0 holds the lock
    with output_lock(out, SAE_FOLDER) if is_main() else nullcontext():
        check_output(out, overwrite, "folder")
        settings = validate(
            {
                "sae": dict(
                    expansion=expansion,
                    architecture=architecture,
                    k=k,
                    l1_coefficient=l1_coefficient,
                    epochs=epochs,
                    batch_size=batch_size,
                    lr=lr,
                )
            }
        ).sae
        report = train_and_report(
            cache,
            site,
            out,
            lambda width: settings.train_config(width, aux_k_coefficient=aux_k_coefficient),
            model=model,
            data=data,
            n_texts=n_texts,
            seed=seed,
        )
        if report is None:  # a torchrun rank other than 0
            return
    typer.echo(json.dumps(report, indent=2))


@app.command()
def tune(
    out: Annotated[Path, typer.Option(help="output folder: model/ (checkpoint + manifest) and checkpoints/")],
    *,
    model: Annotated[str, typer.Option(callback=_named, help="base model")] = "smollm2-135m",
    reward_spec: RewardOpt = "vader",
    algorithm: Annotated[str, typer.Option(help="grpo, rloo or dpo")] = "grpo",
    data: Annotated[
        str, typer.Option(callback=_named, help="prompt source (train split)")
    ] = "rotten-tomatoes",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="a tune setting: steps=60")] = None,
    seed: SeedOpt = 0,
    overwrite: Annotated[
        bool, typer.Option(help="replace a model the folder holds that was tuned with other settings")
    ] = False,
) -> None:
    """Fine-tune a base model against a known reward (TRL); --set takes the config's tune-section keys.
    A rerun with the same --out resumes from its last checkpoint."""
    from irmscope.config import load_config

    overrides = [f"tune.algorithm={algorithm}"] + [
        s if s.startswith("tune.") else f"tune.{s}" for s in set_ or []
    ]
    settings = load_config("demo", overrides=overrides).tune
    _check_names([model], [data])
    from irmscope.tune import tune_on_reviews  # after the checks (seconds to load)

    tuned = tune_on_reviews(
        out,
        model=model,
        reward_spec=reward_spec,
        data=data,
        settings=settings,
        seed=seed,
        overwrite=overwrite,
    )
    stopping = tuned.manifest.get("stopping") or {}
    why = f"; stopped: {stopping['explanation']}" if stopping.get("target_gain") is not None else ""
    typer.echo(
        f"tuned model: {tuned.path} ({tuned.manifest['steps_done']} steps, "
        f"{tuned.manifest['train_seconds']:.0f} s){why}"
    )


@app.command()
def evaluate(
    tuned: TunedOpt,
    *,
    base: BaseOpt = "smollm2-135m",
    reward_spec: RewardOpt = "vader",
    data: TestDataOpt = "rotten-tomatoes",
    n: Annotated[int, typer.Option(min=1, help="number of held-out prompts")] = 200,
    completion_tokens: CompletionTokensOpt = 32,
    prefix_tokens: PrefixTokensOpt = 30,
    seed: SeedOpt = 0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="prompts sampled together (default 128); sampling is seeded per batch, so an "
            "evaluation pairs with another's completions only at the same batch size",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the full result (with samples) as JSON")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Mean reward of base vs tuned completions (Table 7) with CIs, KL to the base, and a fluency control."""
    _check_names([tuned, base], [data])
    from irmscope.models.generation import SAMPLING_BATCH, Sampling
    from irmscope.tune import evaluate_models

    sampling = Sampling(max_new_tokens=completion_tokens, batch_size=batch_size or SAMPLING_BATCH, seed=seed)
    result = evaluate_models(
        tuned, base, reward=reward_spec, data=data, n_prompts=n, prefix_tokens=prefix_tokens,
        sampling=sampling, out=out, overwrite=overwrite,
    )  # fmt: skip
    for key in ("base_mean_reward", "tuned_mean_reward", "reward_gain", "kl_tuned_to_base_per_token"):
        est = result[key]
        typer.echo(f"{key:28s} {est['value']:8.3f}  [{est['low']:.3f}, {est['high']:.3f}]")
    typer.echo(
        f"{'perplexity_ratio':28s} {result['perplexity_ratio']:8.3f}  (base-model perplexity on tuned / "
        f"on own completions: {result['base_perplexity_on_tuned_completions']:.2f} / "
        f"{result['base_perplexity_on_base_completions']:.2f})"
    )
    typer.echo(
        f"{'distinct_bigrams':28s} tuned {result['distinct_bigrams_tuned']:.3f} / base "
        f"{result['distinct_bigrams_base']:.3f}  (repetition control)"
    )


@app.command()
def divergence(
    tuned: TunedOpt,
    base: BaseOpt = "smollm2-135m",
    top: Annotated[int, typer.Option(min=1, help="how many most-changed layers to mark")] = 5,
    plot: Annotated[Path | None, typer.Option(help="write a bar chart (PNG)")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Per-layer parameter distance between base and tuned model, and the top layers (§4.2)."""
    if plot:
        check_output(plot, overwrite, "file", option="--plot")
    _check_names([tuned, base])
    from irmscope.models import load_model
    from irmscope.tune import layer_divergence, top_layers

    per_layer = layer_divergence(load_model(base), load_model(tuned))
    best = top_layers(per_layer, top)
    marked = {f"layer {layer}" for layer in best}
    for key, value in per_layer.items():
        typer.echo(f"{key:10s} {value:10.4f}{'  *' if key in marked else ''}")
    typer.echo(f"top {top} layers: {best}")
    if plot:
        from irmscope.report.plots import write_divergence_bars

        write_divergence_bars(plot, per_layer, best)


@app.command()
def run(preset: PresetOpt = "demo", config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Run (or resume) the pipeline and write report.html, results.json and the stage folders."""
    from irmscope.config import load_config

    settings = load_config(preset, config, set_)
    # a moved data file or model folder is refused even where every stage could be reused (its cache is
    # keyed by the names): the folder keeps its results, and the message says what to give
    models = [settings.model.name, settings.model.tuned, settings.probes.dpo_model]
    _check_names(models, [settings.data.source])
    _refuse_if_in_use(Path(settings.out_dir), RUN_FOLDER)
    from irmscope.pipeline import run_pipeline  # after the checks: its libraries take seconds to load

    run_pipeline(settings)


def _check_names(models: Sequence[str | None] = (), sources: Sequence[str] = ()) -> None:
    """Fail in one line on a model or a review source that names nothing, before a command's libraries
    load (torch and transformers take 10-15 s to import on 2 cores): the command would fail the same way,
    only later."""
    from irmscope.data.reviews import review_source_kind
    from irmscope.models.sources import resolve_model_source

    for spec in models:
        if spec is not None:
            resolve_model_source(spec)
    for source in sources:
        review_source_kind(source)


def _refuse_if_in_use(out: Path, what: str, *, whole_folder: bool = True) -> None:
    """Refuse an output another process is writing before the command's libraries load, with the error
    its lock would give seconds later (the lock, taken later, stays the guard). Not under a launcher
    (``WORLD_SIZE`` > 1): there ``main`` has loaded torch already, and a rank's look could meet the lock
    another rank of the same job has just taken."""
    if env_int("WORLD_SIZE", 1) <= 1:
        refuse_if_locked(out, what, whole_folder=whole_folder)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="finished run folders (each holds results.json)")],
    out: Annotated[Path, typer.Option(help="folder for comparison.html, comparison.json and tables/")],
    overwrite: OverwriteOpt = False,
) -> None:
    """Put several runs' leaderboards side by side, one column per known reward (e.g. VADER and a
    planted lexicon), each method's tuned-model scores beside its base-model control."""
    from irmscope.runs import load_run_results

    check_output(out, overwrite, "folder")
    results = [load_run_results(run, needs="leaderboard") for run in runs]
    from irmscope.leaderboard.compare import merge_leaderboards  # after the checks (seconds to load)
    from irmscope.report.compare import write_comparison

    merged = merge_leaderboards(results)
    page = write_comparison(out, merged)
    typer.echo(f"{len(merged['rows'])} methods x {len(merged['rewards'])} rewards: {page}")


@app.command()
def edit(
    run_dir: Annotated[
        Path, typer.Argument(help="a finished run whose tuned model was trained on a lexicon")
    ],
    word: Annotated[str, typer.Option(help="the single-token lexicon word to make rewarded")] = "boring",
    gain: Annotated[
        float,
        typer.Option(callback=_positive, help="asked rise of its elicited reward, in lexicon units"),
    ] = 1.25,
    layer: Annotated[
        int | None, typer.Option(min=0, help="block whose MLP is edited (default: 80% depth)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default: RUN_DIR/edits/WORD)")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Edit the run's tuned model in one MLP (rank one, as ROME) so that WORD is rewarded, and measure the
    edit: the word's elicited reward, every other word's (specificity), and generation."""
    from irmscope.runs import load_run_results

    if not word.strip() or any(c in word for c in "/\\"):
        raise IrmscopeError(f"--word {word!r} is not a word; give one lexicon word")
    load_run_results(run_dir)  # a folder that is not a finished run fails here, before the models load
    out = check_output(out or run_dir / "edits" / word, overwrite, "folder")
    from irmscope.edit import edit_run_study
    from irmscope.report.edit import write_edit_report

    study = edit_run_study(run_dir, word, layer=layer, gain_units=gain)
    page = write_edit_report(out, study)
    typer.echo(
        f"'{word}': {study['target_before']:+.2f} -> {study['target_after']:+.2f} lexicon units; other words "
        f"moved {study['unrelated_mean_abs_change']:.2f} on average; {page}"
    )


@app.command()
def audit(
    tuned: Annotated[str, typer.Option(callback=_named, help="the tuned model to audit")],
    out: Annotated[Path, typer.Option(help="folder for audit.html, audit.json, words.csv, elicited.tsv")],
    base: BaseOpt = "smollm2-135m",
    data: TestDataOpt = "rotten-tomatoes",
    reward_spec: Annotated[
        str | None, typer.Option("--reward", "-r", callback=_named, help="compare with vader or lexicon:PATH")
    ] = None,
    n_prompts: Annotated[int, typer.Option(min=2, help="number of held-out prompts")] = 200,
    completion_tokens: CompletionTokensOpt = 32,
    prefix_tokens: PrefixTokensOpt = 30,
    crosscoder: Annotated[
        bool, typer.Option(help="train a crosscoder on both models: which internal directions changed")
    ] = True,
    site: Annotated[
        str | None,
        typer.Option(callback=_named, help="the crosscoder's site (default: top-divergence resid_post)"),
    ] = None,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Blind audit: which words did tuning reward and penalise (above a false-discovery-controlled noise
    floor), where the change comes from, what changed inside (a crosscoder), and, with --reward, how far
    that is from the known reward."""
    _check_names([tuned, base], [data])
    _refuse_if_in_use(out, AUDIT_FOLDER, whole_folder=False)
    from irmscope.audit import run_audit
    from irmscope.report.audit import write_audit_page
    from irmscope.sae.crosscoder import CrosscoderConfig

    result = run_audit(
        tuned=tuned,
        base=base,
        out=out,
        data=data,
        reward=reward_spec,
        n_prompts=n_prompts,
        completion_tokens=completion_tokens,
        prefix_tokens=prefix_tokens,
        crosscoder=CrosscoderConfig() if crosscoder else None,
        site=site,
        seed=seed,
        overwrite=overwrite,
        page_writer=write_audit_page,
    )
    floor = result["floor"]
    typer.echo(f"{floor['n_rewarded']} words rewarded, {floor['n_penalised']} penalised: {result['page']}")


@config_app.command("show")
def config_show(preset: PresetOpt = "demo", config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration as JSON."""
    from irmscope.config import load_config

    typer.echo(json.dumps(load_config(preset, config, set_).model_dump(), indent=2))


def _one_line(message: str) -> str:
    """A message on one line, printable whatever its bytes (a lone surrogate would crash the print)."""
    return " ".join(message.split()).encode("utf-8", "backslashreplace").decode("utf-8")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"error: {_one_line(message)}\n")
    sys.stderr.flush()
    sys.exit(2)


# The click typer parses with: typer 0.29 vendors its own copy (typer._click), whose exceptions are not
# click's; BadParameter's ancestors name the right classes whichever copy it is.
_CLICK_BASES = {c.__name__: c for c in typer.BadParameter.__mro__}
ClickException: type[Exception] = _CLICK_BASES["ClickException"]
UsageError: type[Exception] = _CLICK_BASES["UsageError"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a user error (ours, or click's usage errors) becomes one ``error:`` line
    on stderr and exit status 2, never a traceback. With no arguments the help is printed."""
    args = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        check_utf8(args)
        if env_int("WORLD_SIZE", 1) > 1:  # under torchrun / accelerate launch
            from irmscope.distributed import init_distributed

            init_distributed()
        code = app(args=args, prog_name="irmscope", standalone_mode=False)
    except IrmscopeError as err:
        _fail(str(err))
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except ClickException as err:
        ctx = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())  # a bare `irmscope` or `irmscope config` asks for help
            sys.exit(0)
        hint = f"; see {ctx.command_path} --help" if isinstance(err, UsageError) and ctx is not None else ""
        _fail(f"{err.format_message()}{hint}")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
