"""Our SAE trainer against SAELens's, on the same cached activations and hyperparameters, as ratios.

    .venv/bin/python benchmarks/bench_sae.py [--model smollm2-135m] [--site blocks.25.mlp.hook_post]
        [--n-texts 150] [--architecture relu|topk] [--expansion 2] [--epochs 1] [--batch-size 256] ...

Both trainers read the same activation cache (built once under ``--cache-dir``, reused afterwards) with
the same learning rate, batch size, number of tokens and sparsity strength, then both SAEs are scored by
the same code on held-out activations. Reported, from one run each (machine load drifts, so compare the
ratios, not the absolute times, across runs):

* training throughput (tokens/s, wall time around the whole training call, data reading included);
* FVU and L0 on held-out tokens, and the ratios ours / reference.

Each trainer keeps its own design; what differs is written into the output: SAELens's "standard" SAE sums
the squared error over dimensions where ours averages it (so its L1 coefficient is ours x d_in, the same
trade-off), it starts b_dec at zero and decoder rows at norm 0.1 and clips gradients at norm 1, where ours
starts b_dec at the data mean and keeps rows at unit norm. If sae-lens cannot be imported, the script says
why and compares with a plain PyTorch loop (untied ReLU SAE, Adam, the same loss, no constraints) instead.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from irmscope.activations import ActivationStore, cache_activations
from irmscope.config import SAESection
from irmscope.data import load_reviews
from irmscope.io import fingerprint
from irmscope.models import load_model
from irmscope.sae import SAE, SAEConfig, evaluate_sae, load_sae, train_sae

IMDB_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb" / "test.parquet"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--site", default="blocks.25.mlp.hook_post")
    parser.add_argument("--texts", default=str(IMDB_TEST) if IMDB_TEST.is_file() else "rotten-tomatoes")
    parser.add_argument("--n-texts", type=int, default=150, help="texts whose activations train both SAEs")
    parser.add_argument("--n-eval-texts", type=int, default=30, help="held-out texts for FVU and L0")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--architecture", choices=["relu", "topk"], default="relu")
    parser.add_argument("--expansion", type=int, default=2, help="dictionary size / site width")
    parser.add_argument("--k", type=int, default=32, help="active latents for --architecture topk")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--l1", type=float, default=1e-3, help="our L1 coefficient (MSE averaged over dims)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "irmscope" / "bench_sae"))
    parser.add_argument("--out", default="benchmarks/results/sae.json")
    return parser.parse_args()


def cached_store(args: argparse.Namespace, lm, texts: list[str], tag: str) -> ActivationStore:
    key = fingerprint(model=args.model, site=args.site, texts=texts, max_length=args.max_length)
    root = Path(args.cache_dir) / f"{tag}-{key}"
    return cache_activations(lm, texts, [args.site], root, max_length=args.max_length, progress=False)


def batches(
    store: ActivationStore, site: str, batch_size: int, epochs: int, seed: int
) -> Iterator[torch.Tensor]:
    for epoch in range(epochs):
        yield from store.iter_batches(site, batch_size, shuffle=True, seed=seed * 1_000_003 + epoch)


def train_sae_lens(args, store: ActivationStore, d_in: int, d_sae: int, work: Path) -> tuple[SAE, float, int]:
    """Train with SAELens's own trainer; return the SAE (loaded back through our reader), seconds, tokens."""
    from sae_lens import (
        LoggingConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(args.seed)
    if args.architecture == "relu":
        sae = StandardTrainingSAE(
            StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=args.l1 * d_in)
        )
    else:
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=args.k))
    total = store.n_rows * args.epochs
    cfg = SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=args.batch_size,
        lr=args.lr,
        lr_end=args.lr,  # constant schedule; SAELens's runner config normally fills this in
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
    )
    data = batches(store, args.site, args.batch_size, args.epochs, args.seed)
    trainer = SAETrainer(cfg, sae, data)
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    sae.save_model(work / "sae_lens")
    return load_sae(work / "sae_lens"), seconds, trainer.n_training_samples


def train_plain_reference(args, store: ActivationStore, d_in: int, d_sae: int) -> tuple[SAE, float, int]:
    """The fallback reference: the textbook loop, with nothing of ours but the SAE module's forward."""
    torch.manual_seed(args.seed)
    sae = SAE(
        SAEConfig(
            d_in, d_sae, architecture=args.architecture, k=args.k if args.architecture == "topk" else None
        )
    )
    optimizer = torch.optim.Adam(sae.parameters(), lr=args.lr)
    l1 = args.l1 if args.architecture == "relu" else 0.0
    tokens = 0
    start = time.perf_counter()
    for x in batches(store, args.site, args.batch_size, args.epochs, args.seed):
        recon, latents = sae(x)
        loss = (recon - x).pow(2).mean() + l1 * latents.abs().sum(dim=-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tokens += x.shape[0]
    return sae, time.perf_counter() - start, tokens


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    frame = load_reviews(args.texts, split="test", limit=args.n_texts + args.n_eval_texts, seed=args.seed)
    texts = frame["text"].tolist()
    lm = load_model(args.model)
    t0 = time.perf_counter()
    store = cached_store(args, lm, texts[: args.n_texts], "train")
    held_out = cached_store(args, lm, texts[args.n_texts :], "eval")
    cache_seconds = time.perf_counter() - t0
    d_in = store.width(args.site)
    d_sae = args.expansion * d_in
    print(f"{store.n_rows} training tokens, {held_out.n_rows} held-out tokens, width {d_in} -> {d_sae}")

    settings = SAESection(
        architecture=args.architecture,
        expansion=args.expansion,
        k=args.k,
        l1_coefficient=args.l1,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
    )
    config = settings.train_config(d_in, log_every=10_000, device="cpu")
    start = time.perf_counter()
    ours, log = train_sae(store, args.site, config, seed=args.seed, progress=False)
    ours_seconds = time.perf_counter() - start

    work = Path(args.cache_dir) / "work"
    try:
        import sae_lens

        reference_name = f"sae_lens {sae_lens.__version__}"
        why = None
    except Exception as err:  # noqa: BLE001 - any import failure means: use the fallback, and say why
        reference_name, why = (
            "plain PyTorch loop",
            f"sae-lens cannot be imported ({type(err).__name__}: {err})",
        )
    if why is None:
        reference, ref_seconds, ref_tokens = train_sae_lens(args, store, d_in, d_sae, work)
    else:
        print(f"reference: {why}; comparing with a plain PyTorch training loop instead")
        reference, ref_seconds, ref_tokens = train_plain_reference(args, store, d_in, d_sae)

    scores = {
        "ours": evaluate_sae(ours, held_out, site=args.site),
        "reference": evaluate_sae(reference, held_out, site=args.site),
    }
    speed = {"ours": log.n_tokens / ours_seconds, "reference": ref_tokens / ref_seconds}
    result = {
        "model": args.model,
        "site": args.site,
        "architecture": args.architecture,
        "d_in": d_in,
        "d_sae": d_sae,
        "k": args.k if args.architecture == "topk" else None,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "l1_ours": args.l1,
        "l1_reference": args.l1 * d_in if why is None and args.architecture == "relu" else args.l1,
        "training_tokens": store.n_rows,
        "held_out_tokens": held_out.n_rows,
        "torch_threads": torch.get_num_threads(),
        "cache_seconds": cache_seconds,
        "reference": reference_name,
        "reference_unavailable_because": why,
        "seconds": {"ours": ours_seconds, "reference": ref_seconds},
        "tokens_per_s": speed,
        "held_out": {name: metrics.to_dict() for name, metrics in scores.items()},
        "ratio_ours_to_reference": {
            "tokens_per_s": speed["ours"] / speed["reference"],
            "fvu": scores["ours"].fvu / scores["reference"].fvu,
            "l0": scores["ours"].l0 / scores["reference"].l0 if scores["reference"].l0 else float("nan"),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"reference: {reference_name}")
    print(f"{'':12s} {'tokens/s':>10s} {'FVU':>8s} {'L0':>8s} {'dead':>6s}")
    for name in ("ours", "reference"):
        m = scores[name]
        print(f"{name:12s} {speed[name]:10.0f} {m.fvu:8.4f} {m.l0:8.1f} {m.dead_fraction:6.3f}")
    ratio = result["ratio_ours_to_reference"]
    print(f"{'ours / ref':12s} {ratio['tokens_per_s']:10.2f} {ratio['fvu']:8.2f} {ratio['l0']:8.2f}")


if __name__ == "__main__":
    main()
