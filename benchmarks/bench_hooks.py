"""Cost of capturing hook sites, as ratios to the plain forward pass measured in the same run.

    .venv/bin/python benchmarks/bench_hooks.py [--model smollm2-135m] [--batch 8] [--tokens 128] [--repeats 7]

Reports (median over repeats, interleaved so that drift in machine load hits every variant alike):
* capture of every layer's ``mlp.hook_post`` and ``hook_resid_post`` with the full pass, over the plain
  forward pass (goal: under 1.10);
* the same capture with ``stop_early`` (which also skips the unembedding), over the plain pass;
* capture of the first half of the layers with early stop, over the plain pass (the early-stop saving).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from irmscope.models import capture_activations, load_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/hooks.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    lm = load_model(args.model)
    ids = torch.randint(100, lm.tokenizer.vocab_size - 1, (args.batch, args.tokens))
    every = lm.sites(("mlp.hook_post", "hook_resid_post"))
    first_half = [s for s in every if int(s.split(".")[1]) < lm.n_layers // 2]

    variants = {
        "plain_forward": lambda: lm.model(input_ids=ids, use_cache=False),
        "capture_all_full_pass": lambda: capture_activations(lm.model, every, ids, stop_early=False),
        "capture_all_stop_early": lambda: capture_activations(lm.model, every, ids),
        "capture_first_half_stop_early": lambda: capture_activations(lm.model, first_half, ids),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    base = median["plain_forward"]
    result = {
        "model": args.model,
        "batch": args.batch,
        "tokens_per_row": args.tokens,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "sites_all": len(every),
        "sites_first_half": len(first_half),
        "median_seconds": median,
        "ratio_to_plain_forward": {name: value / base for name, value in median.items()},
        "plain_forward_tokens_per_s": args.batch * args.tokens / base,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'variant':34s} {'median s':>9s} {'x plain':>8s}")
    for name in variants:
        print(f"{name:34s} {median[name]:9.3f} {median[name] / base:8.3f}")


if __name__ == "__main__":
    main()
