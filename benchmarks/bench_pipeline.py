"""Where a pipeline run's time goes: each stage's wall time over its compute floor, measured in one run.

    .venv/bin/python benchmarks/bench_pipeline.py --run RUN_FOLDER [--model smollm2-135m]
        [--out benchmarks/results/pipeline.json] [--repeats 3] [--sampling-batches 1,4,8,16,32,64,128]

Every stage of a finished run records its wall time and the tokens its model passes processed, by kind
(``done.json`` and the manifest of ``results.json``; see ``irmscope.models.accounting``): plain forward
tokens, forward-backward tokens and cached sampling steps. This script measures, on this machine, in this
run, with the run's model (or ``--model``), what one token of each kind costs:

* forward: a plain pass (no gradients) at the run's activation batch size and length;
* forward-backward: a pass and its backward at the run's tuning batch size and prompt + completion length,
  through a LoRA adapter of the run's rank when the run tunes one (as TRL does), else through all weights;
* cached sampling step: one new token per row on a key-value cache, after a prompt of the run's prefix
  length, at each batch size of ``--sampling-batches`` and the run's; the fastest is the floor's price.
  The step draws as the pipeline does (``irmscope.models.categorical``); the same step with
  ``torch.multinomial``'s draw, the baseline that sampler replaced, is measured beside it;
* the plain pass, the forward-backward pass and the sampling step again with bfloat16 matrix products
  (``torch.autocast``), the price of the tokens a stage counted as ``forward_bfloat16``,
  ``backward_bfloat16`` and ``sampled_bfloat16`` (the passes that only sample or read activations run so
  where the CPU has native bfloat16, ``irmscope.models.precision``, and tuning's training passes with
  ``tune.precision`` bfloat16 or auto).

A stage's floor is its tokens times these prices, and its ratio is wall time / floor (its wall time
includes loading a model, in the first stage that uses it). The floor prices the
work the stage did, not the least work it could do: a text read twice is priced twice, so a ratio near 1
says the passes are used well, not that none is redundant (compare the token counts with the data). Where
the ratio exceeds 3 (or there is no floor), a one-line *heuristic* reason names what the numbers point at.
The table is written to ``--out`` and printed as markdown for the README. The output also names the
run's commit and machine (from its manifest: ``irmscope.provenance``) and the machine and time the prices
were measured, and the script warns when the run and the prices come from two kinds of CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from irmscope.config import RunConfig
from irmscope.errors import IrmscopeError
from irmscope.models import load_model
from irmscope.models.categorical import fast_multinomial
from irmscope.models.kv_cache import cache_argument, returned_cache
from irmscope.models.precision import matmul_precision
from irmscope.provenance import describe_machine
from irmscope.runs import load_run_results
from irmscope.tune.progress import quiet_steps

KINDS = ("forward", "backward", "sampled", "forward_bfloat16", "sampled_bfloat16", "backward_bfloat16")
BFLOAT16_KINDS = tuple(kind for kind in KINDS if kind.endswith("_bfloat16"))
#: how many of a slow stage's timed parts its reason names
TOP_PARTS = 3
#: ratios above this get a one-line reason (the issue's target: every stage within 3x of its floor)
LIMIT = 3.0
#: what the stages without language-model passes spend their time on (by stage name without -tuned/-base)
NO_MODEL_PASSES = {
    "planted-lexicon": "draws the planted word values",
    "prompts": "reads the reviews and cuts prompts (and loads the base model)",
    "divergence": "compares the two models' weights (and loads the tuned model)",
    "sites": "picks the sites from the divergence",
    "saes": "trains SAEs on cached activations (benchmarks/bench_sae.py prices that)",
    "interpret": "trains pair SAEs on cached activations and reads them",
    "audit": "trains its two model-diffing dictionaries on activations the read-samples stage kept",
}


def pipeline_table(
    stages: dict[str, dict[str, Any]],
    price: dict[str, float | None],
    sampling_slowdown: tuple[int, int, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per stage (and a total): wall s, tokens by kind, floor s, ratio, and a heuristic reason.

    ``stages`` is the manifest's ``{name: {"seconds": s, "tokens": {kind: n}}}``; ``price`` the seconds
    per token of each kind; ``sampling_slowdown`` ``(run batch, fastest batch, cost ratio)`` of the run's
    sampling batch size against the fastest, named in the reason of a stage whose floor is mostly sampling.
    """
    rows = []
    for name, entry in stages.items():
        wall, tokens = entry.get("seconds"), entry.get("tokens")
        # a run from before bfloat16 passes were counted apart has none of them
        tokens = None if tokens is None else {kind: tokens.get(kind, 0) for kind in KINDS}
        floor = None if tokens is None else _floor(tokens, price)
        ratio = wall / floor if wall is not None and floor else None
        why = _why(name, wall, tokens, floor, ratio, price, sampling_slowdown, entry.get("parts"))
        rows.append(
            {
                "stage": name,
                "wall_s": wall,
                **{f"{kind}_tokens": None if tokens is None else tokens[kind] for kind in KINDS},
                "floor_s": floor,
                "ratio": ratio,
                "why": why,
            }
        )
    walls = [r["wall_s"] for r in rows if r["wall_s"] is not None]
    floors = [r["floor_s"] for r in rows if r["floor_s"] is not None]
    total_wall, total_floor = sum(walls), sum(floors)
    rows.append(
        {
            "stage": "total",
            "wall_s": total_wall,
            **{f"{kind}_tokens": sum(r[f"{kind}_tokens"] or 0 for r in rows) for kind in KINDS},
            "floor_s": total_floor,
            "ratio": total_wall / total_floor if total_floor else None,
            "why": None,
        }
    )
    return rows


def _floor(tokens: dict[str, int], price: dict[str, float | None]) -> float:
    """Seconds the counted tokens cost at ``price``; a kind the run counted none of needs no price (a run
    on a CPU without native bfloat16 counts no bfloat16 tokens, and its bfloat16 prices are not measured)."""
    return sum(tokens[kind] * price[kind] for kind in KINDS if tokens[kind])  # type: ignore[operator]


def _why(
    name: str,
    wall: float | None,
    tokens: dict[str, int] | None,
    floor: float | None,
    ratio: float | None,
    price: dict[str, float | None],
    sampling_slowdown: tuple[int, int, float] | None,
    parts: dict[str, float] | None = None,
) -> str | None:
    """A heuristic one-line reason for a ratio above :data:`LIMIT` or a missing floor; where the stage timed
    its parts (the manifest's ``parts``, e.g. one per leaderboard method), the slowest are named."""
    if wall is None:
        return "no wall time recorded"
    if tokens is None:
        return "no token counts recorded (finished by an older irmscope): rerun the stage to count them"
    if not floor:
        work = NO_MODEL_PASSES.get(name.removesuffix("-tuned").removesuffix("-base"), "works outside them")
        return f"no floor: no language-model passes; it {work}"
    if ratio <= LIMIT:
        return None
    shares = {kind: tokens[kind] * price[kind] / floor for kind in KINDS if tokens[kind]}
    main = max(shares, key=shares.get)
    why = f"{wall - floor:.0f} s above a floor that is {shares[main]:.0%} {main} tokens"
    if main.startswith("sampled") and sampling_slowdown and sampling_slowdown[2] > 1.05:
        run_batch, best_batch, slowdown = sampling_slowdown
        why += f"; sampling at batch {run_batch} costs {slowdown:.1f}x batch {best_batch}'s per token"
    if parts:
        slowest = sorted(parts.items(), key=lambda item: -item[1])[:TOP_PARTS]
        named = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in slowest)
        return why + f"; its slowest parts (timed by the stage, passes included): {named}"
    return why + "; the rest is outside the priced passes or their per-call overhead (tokenising, loops)"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The table as markdown, for the README's benchmark section."""

    def num(value, fmt):
        return "n/a" if value is None else format(value, fmt)

    lines = [
        "| stage | wall s | forward tok | backward tok | sampled tok | forward tok, bf16 | sampled tok, bf16 "
        "| backward tok, bf16 | floor s | wall / floor | why (heuristic) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        cells = [
            r["stage"],
            num(r["wall_s"], ".1f"),
            *(num(r[f"{kind}_tokens"], ",") for kind in KINDS),
            num(r["floor_s"], ".1f"),
            num(r["ratio"], ".1f"),
            r["why"] or "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_ids(lm, batch: int, length: int) -> torch.Tensor:
    return torch.randint(100, lm.tokenizer.vocab_size - 1, (batch, length))


def forward_price(lm, batch: int, length: int, repeats: int, precision: str = "float32") -> float:
    ids = random_ids(lm, batch, length)
    with torch.no_grad(), matmul_precision(precision):
        seconds = median_seconds(lambda: lm.model(input_ids=ids, use_cache=False), repeats)
    return seconds / ids.numel()


def forward_backward_price(
    spec: str, config: RunConfig, batch: int, length: int, repeats: int, precision: str = "float32"
) -> float:
    """Seconds per token of a pass and its backward, through a LoRA adapter when the run tunes one;
    ``precision``: of the matrix products (bfloat16 as TrainingArguments' bf16 mixed precision runs them)."""
    lm = load_model(spec)  # a copy of its own: the adapter must not touch the model other prices use
    model = lm.model
    if config.tune.lora:
        from peft import LoraConfig, get_peft_model

        rank = config.tune.lora_rank
        lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", task_type="CAUSAL_LM")
        with quiet_steps():  # PEFT reads transformers' deprecated attribute, as in the tuning stage
            model = get_peft_model(model, lora)
    model.train()
    ids = random_ids(lm, batch, length)

    def step():
        with matmul_precision(precision):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return median_seconds(step, repeats) / ids.numel()


def sampling_price(
    lm,
    batch: int,
    prompt_tokens: int,
    steps: int,
    repeats: int,
    pipelines_sampler: bool = True,
    precision: str = "float32",
) -> float:
    """Seconds per token of a cached decoding step (forward of one new token per row, then sampling), with
    the pipeline's exact inverse-CDF draw (``irmscope.models.categorical``) or, with
    ``pipelines_sampler=False``, torch's own ``multinomial`` (the baseline it replaced); ``precision``: of
    the matrix products (``irmscope.models.precision``)."""
    prompt = random_ids(lm, batch, prompt_tokens)
    elapsed = []

    def decode():
        sampler = fast_multinomial() if pipelines_sampler else nullcontext()
        with torch.no_grad(), sampler, matmul_precision(precision):
            out = lm.model(input_ids=prompt, use_cache=True)
            start = time.perf_counter()
            for _ in range(steps):
                probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
                token = torch.multinomial(probs, 1)
                out = lm.model(input_ids=token, use_cache=True, **cache_argument(returned_cache(out)))
            elapsed.append(time.perf_counter() - start)

    median_seconds(decode, repeats)  # the decoding steps alone are timed, not the prompt's prefill
    return statistics.median(elapsed[1:]) / (batch * steps)


def measure_prices(
    spec: str, config: RunConfig, batches: list[int], repeats: int, bfloat16: bool = True
) -> dict[str, Any]:
    """The three per-token prices on this machine, with the sizes they were measured at; with
    ``bfloat16`` the same under bfloat16 autocast, else ``"bfloat16"`` is None (a run on a CPU without
    native bfloat16 counts no such tokens, and there the emulated products take minutes to price)."""
    torch.manual_seed(0)
    lm = load_model(spec)
    acts, gen, tune = config.activations, config.generation, config.tune
    fb_length = config.data.prefix_tokens + tune.max_completion_tokens
    sweep = {
        b: sampling_price(lm, b, config.data.prefix_tokens, gen.max_new_tokens, repeats)
        for b in sorted({*batches, gen.batch_size})
    }
    fastest = min(sweep, key=sweep.get)
    tokens_per_row = (config.data.prefix_tokens, gen.max_new_tokens)
    return {
        "forward": {
            "batch": acts.batch_size,
            "tokens_per_row": acts.max_length,
            "seconds_per_token": forward_price(lm, acts.batch_size, acts.max_length, repeats),
        },
        "forward_backward": {
            "batch": tune.batch_size,
            "tokens_per_row": fb_length,
            "lora_rank": tune.lora_rank if tune.lora else None,
            "seconds_per_token": forward_backward_price(spec, config, tune.batch_size, fb_length, repeats),
        },
        "sampling": {
            "prompt_tokens": config.data.prefix_tokens,
            "steps": gen.max_new_tokens,
            "seconds_per_token_by_batch": {str(b): s for b, s in sweep.items()},
            "fastest_batch": fastest,
            "run_batch": gen.batch_size,
            "seconds_per_token": sweep[fastest],
            # the same step with torch.multinomial's draw, the baseline of the pipeline's sampler
            "seconds_per_token_torch_multinomial": sampling_price(
                lm, fastest, *tokens_per_row, repeats, pipelines_sampler=False
            ),
        },
        # the passes that only sample or read activations run in bfloat16 where it is native
        # (irmscope.models.precision): priced at the same sizes, under the same autocast
        "bfloat16": None
        if not bfloat16
        else {
            "forward_seconds_per_token": forward_price(
                lm, acts.batch_size, acts.max_length, repeats, precision="bfloat16"
            ),
            "sampling_seconds_per_token": sampling_price(
                lm, fastest, *tokens_per_row, repeats, precision="bfloat16"
            ),
            "forward_backward_seconds_per_token": forward_backward_price(
                spec, config, tune.batch_size, fb_length, repeats, precision="bfloat16"
            ),
        },
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a finished run folder (holding results.json)")
    parser.add_argument("--model", default=None, help="model to price tokens with (default: the run's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampling-batches", default="1,4,8,16,32,64,128")
    parser.add_argument("--out", default="benchmarks/results/pipeline.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    results = load_run_results(args.run, needs="manifest")
    config = RunConfig.model_validate(results["config"])
    spec = args.model or config.model.name
    try:
        batches = [int(b) for b in args.sampling_batches.split(",")]
    except ValueError as err:
        raise IrmscopeError(f"--sampling-batches must be integers separated by commas ({err})") from err
    stages = results["manifest"]["stages"]
    counted = {kind for entry in stages.values() for kind, n in (entry.get("tokens") or {}).items() if n}
    prices = measure_prices(
        spec, config, batches, args.repeats, bfloat16=bool(counted.intersection(BFLOAT16_KINDS))
    )
    half = prices["bfloat16"] or {}
    price = {
        "forward": prices["forward"]["seconds_per_token"],
        "backward": prices["forward_backward"]["seconds_per_token"],
        "sampled": prices["sampling"]["seconds_per_token"],
        "forward_bfloat16": half.get("forward_seconds_per_token"),
        "sampled_bfloat16": half.get("sampling_seconds_per_token"),
        "backward_bfloat16": half.get("forward_backward_seconds_per_token"),
    }
    sampling = prices["sampling"]
    by_batch = sampling["seconds_per_token_by_batch"]
    slowdown = (
        sampling["run_batch"],
        sampling["fastest_batch"],
        by_batch[str(sampling["run_batch"])] / sampling["seconds_per_token"],
    )
    rows = pipeline_table(stages, price, slowdown)
    manifest = results["manifest"]
    out = {
        "run": args.run,  # as given: a path on this machine would mean nothing in a committed result
        # where the run's numbers came from (absent for a run from before they were recorded), and where
        # the prices were measured: a floor means something only when the two machines are one
        "run_code": manifest.get("code"),
        "run_machine": manifest.get("machine"),
        "priced_on": describe_machine(),
        "priced_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": spec,
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "prices": prices,
        "limit": LIMIT,
        "stages": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    per_k = {kind: value * 1000 for kind, value in price.items() if value is not None}
    in_bfloat16 = (
        f"(with bfloat16 products: forward {per_k['forward_bfloat16']:.3f}, "
        f"forward-backward {per_k['backward_bfloat16']:.3f}, sampling {per_k['sampled_bfloat16']:.3f}) "
        if half
        else "(no bfloat16 prices: the run counted no bfloat16 tokens) "
    )
    print(
        f"ms per token on {spec} ({torch.get_num_threads()} threads): forward {per_k['forward']:.3f}, "
        f"forward-backward {per_k['backward']:.3f}, cached sampling step {per_k['sampled']:.3f} "
        + in_bfloat16
        + f"(batch {sampling['fastest_batch']}, the fastest of {sorted(int(b) for b in by_batch)}; "
        f"{sampling['seconds_per_token_torch_multinomial'] / sampling['seconds_per_token']:.2f}x that with "
        "torch.multinomial's draw)"
    )
    print(markdown_table(rows))
    ran_on = out["run_machine"]
    if ran_on and ran_on["kind"] != out["priced_on"]["kind"]:
        print(
            f"warning: the run ran on {ran_on['cpu']} ({ran_on['kind']}), the prices were measured on "
            f"{out['priced_on']['cpu']} ({out['priced_on']['kind']}): its ratios compare two machines; price "
            "a run on the machine it ran on"
        )


if __name__ == "__main__":
    main()
