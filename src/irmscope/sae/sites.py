"""Train one SAE per cached site, resumably, and measure each on held-out activations.

The paper trains an SAE for every selected layer (§4.2; §4.3 uses dictionaries as wide as the
activations). Each finished SAE is written to ``<out_dir>/<site>/`` in SAELens's layout before the next one
starts, so a run killed half-way keeps the finished ones and trains only the rest when run again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from irmscope.activations.store import ActivationStore
from irmscope.sae.io import SAE_CFG_FILENAME, load_sae
from irmscope.sae.metrics import appendix_j_figures, evaluate_sae
from irmscope.sae.model import SAE
from irmscope.sae.train import TRAINING_LOG, TrainConfig, train_sae


def train_site_saes(
    store: ActivationStore,
    config_for_width: Callable[[int], TrainConfig],
    out_dir: str | Path,
    held_out: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    progress: bool = True,
    held_out_positions: torch.Tensor | None = None,
) -> tuple[dict[str, SAE], dict[str, dict[str, Any]]]:
    """An SAE for every site in ``store`` (trained with ``config_for_width(site width)``) and its metrics.

    ``held_out`` maps sites to activations the SAE never trained on; metrics (FVU, L0, dead fraction and the
    paper's Appendix J figures) are measured there when given, otherwise on the training cache (and labelled
    so). With ``held_out_positions`` (each held-out row's position in its text) FVU and L0 are also given
    without each text's first token: in later layers of many models that token carries huge "attention
    sink" activations that hold most of the variance (97% at SmolLM2-135M's layer 28), so an SAE that
    reconstructs it alone already scores a low FVU over all tokens. Already finished sites are loaded, not
    retrained.
    """
    out_dir = Path(out_dir)
    saes: dict[str, SAE] = {}
    metrics: dict[str, dict[str, Any]] = {}
    for i, site in enumerate(store.sites):
        folder = out_dir / site
        if (folder / SAE_CFG_FILENAME).is_file() and (folder / TRAINING_LOG).is_file():
            sae = load_sae(folder)
        else:
            config = config_for_width(store.width(site))
            sae, _ = train_sae(store, site, config, out_dir=folder, seed=seed + i, progress=progress)
        data = held_out[site] if held_out is not None else store
        measured = evaluate_sae(sae, data, site=None if held_out is not None else site)
        if held_out is not None and held_out_positions is not None:
            later = evaluate_sae(sae, held_out[site][held_out_positions > 0])
            measured_later = {"fvu_without_first_token": later.fvu, "l0_without_first_token": later.l0}
        else:
            measured_later = {}
        metrics[site] = {
            **measured.to_dict(),
            **measured_later,
            **appendix_j_figures(measured),
            "d_sae": sae.d_sae,
            "evaluated_on": "held-out texts" if held_out is not None else "training cache",
        }
        saes[site] = sae
    return saes, metrics
