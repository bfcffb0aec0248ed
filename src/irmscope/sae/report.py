"""Train one SAE on a cached site and measure it: the library half of ``irmscope train-sae``.

The command line parses options and holds the folder's lock; this opens the cache, trains, and writes
``report.json`` with the quality metrics (FVU, L0, dead latents) and, given a model, the spliced loss.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from irmscope.activations import ActivationStore
from irmscope.distributed import is_main
from irmscope.io import write_json
from irmscope.sae.metrics import evaluate_sae, spliced_lm_loss
from irmscope.sae.model import SAE
from irmscope.sae.train import TrainConfig, check_site, train_sae

#: tokens of each held-out text the metrics read
HELD_OUT_TOKENS = 96


def train_and_report(
    cache: Path,
    site: str,
    out: Path,
    train_config: Callable[[int], TrainConfig],
    *,
    model: str | None = None,
    data: str = "rotten-tomatoes",
    n_texts: int = 100,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Train an SAE on ``site`` of the cache at ``cache`` into ``out`` and write ``out/report.json``.

    ``train_config`` builds the trainer's settings from the site's width, which is known only once the
    cache is open. With ``model``, the metrics are measured on ``n_texts`` held-out texts of ``data`` run
    through that model (and the spliced LM loss with them); without, on the cache itself.
    Returns the report, or None on a torchrun rank other than 0 (every rank trains the same SAE, and
    rank 0 alone measures and writes it).
    """
    store = ActivationStore(cache)
    check_site(store, site)
    sae, log = train_sae(store, site, train_config(store.width(site)), out_dir=out, seed=seed)
    if not is_main():
        return None
    report: dict[str, Any] = {
        "site": site,
        "d_sae": sae.d_sae,
        "train_tokens_per_second": log.tokens_per_second,
    }
    if model:
        report.update(_held_out_metrics(sae, site, model, data, n_texts, seed))
    else:
        report["metrics"] = evaluate_sae(sae, store, site).to_dict()
    write_json(out / "report.json", report)
    return report


def _held_out_metrics(sae: SAE, site: str, model: str, data: str, n_texts: int, seed: int) -> dict[str, Any]:
    """The metrics on texts the SAE was not trained on, with and without each text's first token (a
    position whose activations can be outliers), and the LM loss with the SAE spliced in at ``site``."""
    from irmscope.data import load_reviews
    from irmscope.models import load_model
    from irmscope.models.hooks import capture_activations

    lm = load_model(model, seed=seed)
    texts = list(load_reviews(data, split="test", limit=n_texts, seed=seed + 7)["text"])
    enc = lm.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=HELD_OUT_TOKENS)
    acts = capture_activations(lm.model, [site], enc["input_ids"], enc["attention_mask"])[site]
    mask = enc["attention_mask"].bool()
    later = mask & (enc["attention_mask"].cumsum(dim=1) > 1)  # every token but each text's first
    return {
        "metrics": evaluate_sae(sae, acts[mask]).to_dict(),
        "metrics_without_first_token": evaluate_sae(sae, acts[later]).to_dict(),
        "spliced": spliced_lm_loss(lm, sae, site, texts, max_length=HELD_OUT_TOKENS).to_dict(),
    }
