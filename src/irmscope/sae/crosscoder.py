"""A crosscoder for model diffing: one sparse dictionary that reads and writes two models at the same site.

Lindsey et al. (2024, "Sparse Crosscoders for Cross-Layer Features and Model Diffing") train one set of
latents on the paired activations ``x_m`` of two models on the same token::

    latents   = TopK(sum_m (s_m x_m - b_dec_m) @ W_enc[m] + b_enc)      one code for both models
    x_hat_m   = (latents @ W_dec[:, m] + b_dec_m) / s_m                  one decoder per model

A latent both models use has decoder rows of similar norm in both; one that only the tuned model has
writes (almost) only the tuned model's half. The **relative decoder norm**
``‖d_tuned‖ / (‖d_tuned‖ + ‖d_base‖)`` is then near 1 for tuned-only latents, near 0 for base-only ones
and near 0.5 for shared ones (Lindsey et al.'s histogram). A latent both models use can also be
*rotated*: the tuned model writes something else when it fires (a fine-tune that adds a direction
wherever a token occurs does this). The **decoder change** ``‖d_tuned − d_base‖ / (‖d_tuned‖ + ‖d_base‖)``
sees both: 0 for an unchanged latent, 1 for a one-model or reversed one.

Choices, each for a reason:

* **TopK, not L1.** Minder et al. (2025, "Robustly identifying concepts introduced during chat
  fine-tuning using crosscoders") show that the L1 crosscoder's norm-weighted penalty makes latents look
  model-specific when they are not (a shared latent whose one decoder shrinks to zero costs less
  penalty), and recommend a (Batch)TopK crosscoder, whose sparsity costs nothing per decoder norm.
* **Both models' decoder rows start equal** (random unit rows, the encoder their transpose): every latent
  starts shared, so a relative norm away from 0.5 comes from the data alone. Two identical models give
  exactly 0.5 for every latent (a test checks it).
* **Each model's activations are scaled** (``s_m``, fixed from the data before training) to a mean squared
  norm of ``d_in``, so a model with larger activations does not own the reconstruction loss and the
  decoder norms of the two halves are comparable. Decoder norms are read in those scaled units.
* **AuxK** (Gao et al. 2024; :func:`~irmscope.sae.train.auxk_loss`) gives latents silent for a window a
  gradient: an audit's few tens of thousands of tokens leave many latents dead otherwise.

Weights save as ``crosscoder.safetensors`` with ``cfg.json`` beside them (SAELens has no crosscoder
format; the tensor names follow the SAE's, with the model axis added).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from irmscope.errors import IrmscopeError
from irmscope.io import atomic_write_dir, write_json
from irmscope.sae.train import DeadLatentTracker, adam, auxk_loss, check_training_numbers

CROSSCODER_WEIGHTS = "crosscoder.safetensors"
CROSSCODER_CONFIG = "cfg.json"
#: the two models a crosscoder reads, in the order of its model axis
MODELS: tuple[str, str] = ("base", "tuned")


@dataclass(frozen=True)
class CrosscoderConfig:
    """The crosscoder's shape and training. ``expansion`` sets the dictionary size (``expansion * d_in``
    latents), ``k`` the latents active per token. ``dead_window`` is in tokens (see
    :class:`~irmscope.sae.train.DeadLatentTracker`). ``difference_k`` is the latents active per token of
    the audit's dictionary of differences trained beside it, every other setting the same
    (:func:`irmscope.audit.inside.difference_dictionary`)."""

    expansion: int = 4
    k: int = 32
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    aux_k_coefficient: float = 1 / 32
    dead_window: int = 5_000
    difference_k: int = 4

    def __post_init__(self) -> None:
        counts = ("expansion", "k", "epochs", "batch_size", "dead_window", "difference_k")
        check_training_numbers("crosscoder", self, counts, ("aux_k_coefficient",))


class Crosscoder(nn.Module):
    """A TopK crosscoder over ``n_models`` models' activations of width ``d_in`` (see the module doc)."""

    def __init__(
        self, d_in: int, d_sae: int, k: int, n_models: int = 2, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if not 1 <= k <= d_sae:
            raise IrmscopeError(f"a crosscoder needs 1 <= k <= d_sae, not k={k}, d_sae={d_sae}")
        self.d_in, self.d_sae, self.k, self.n_models = d_in, d_sae, k, n_models
        rows = torch.randn(d_sae, d_in, generator=generator)
        rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec = nn.Parameter(rows[:, None, :].repeat(1, n_models, 1).contiguous())  # [d_sae, m, d_in]
        self.W_enc = nn.Parameter(
            rows.T[None].repeat(n_models, 1, 1).contiguous() / n_models
        )  # [m, d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(n_models, d_in))
        self.register_buffer("scale", torch.ones(n_models))

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations of ``x`` (``[n, n_models, d_in]``, raw activations)."""
        scaled = x.float() * self.scale[:, None] - self.b_dec
        return torch.einsum("nmd,mds->ns", scaled, self.W_enc) + self.b_enc

    def top_k(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The active latents of each row of pre-activations: ``(values, indices)``, ``[n, k]`` each."""
        values, indices = torch.topk(pre, k=self.k, dim=-1, sorted=False)
        return torch.relu(values), indices

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``'s active latents, ``(values, indices)``: the ``k`` largest pre-activations, ReLU'd."""
        return self.top_k(self.encode_pre(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The dense ``[n, d_sae]`` latents of ``x``."""
        values, indices = self.encode_sparse(x)
        return torch.zeros(x.shape[0], self.d_sae, device=x.device).scatter(-1, indices, values)

    def decode_scaled(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The reconstruction in the scaled units, from the active latents only (an embedding bag)."""
        rows = nn.functional.embedding_bag(
            indices, self.W_dec.flatten(1), per_sample_weights=values, mode="sum"
        )
        return rows.view(-1, self.n_models, self.d_in) + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, latents)``: the reconstruction in ``x``'s raw units."""
        values, indices = self.encode_sparse(x)
        latents = torch.zeros(x.shape[0], self.d_sae, device=x.device).scatter(-1, indices, values)
        return self.decode_scaled(values, indices) / self.scale[:, None], latents

    @property
    def decoder_norms(self) -> torch.Tensor:
        """``[d_sae, n_models]``: each latent's decoder-row norm in each model (scaled units)."""
        return self.W_dec.detach().norm(dim=-1)

    def relative_decoder_norm(self, model: int = 1) -> np.ndarray:
        """``‖d_model‖ / Σ_m ‖d_m‖`` per latent: 1 for a latent only ``model`` uses, 1/n_models if shared."""
        norms = self.decoder_norms.double()
        return (norms[:, model] / norms.sum(1).clamp_min(1e-30)).numpy()

    def decoder_change(self, model: int = 1, reference: int = 0) -> np.ndarray:
        """``‖d_model − d_reference‖ / (‖d_model‖ + ‖d_reference‖)`` per latent: 0 when both models write the
        same direction at the same norm, 1 when only one writes it (or they write opposite ones). It sees
        a rotated latent, which the relative norm misses."""
        rows = self.W_dec.detach().double()
        difference = (rows[:, model] - rows[:, reference]).norm(dim=-1)
        return (
            difference / (rows[:, model].norm(dim=-1) + rows[:, reference].norm(dim=-1)).clamp_min(1e-30)
        ).numpy()

    def decoder_cosine(self) -> np.ndarray:
        """The cosine between each latent's two decoder rows: does a shared latent write one direction?"""
        a, b = self.W_dec.detach().double().unbind(1)
        return (nn.functional.cosine_similarity(a, b, dim=-1)).numpy()

    def config_dict(self) -> dict[str, Any]:
        """The shape, as ``cfg.json`` records it and :func:`load_crosscoder` rebuilds it."""
        return {"d_in": self.d_in, "d_sae": self.d_sae, "k": self.k, "n_models": self.n_models}


@dataclass
class CrosscoderLog:
    """How training went: the fraction of variance each model's half leaves unexplained at the end (on the
    training tokens), the dead latents, and the time it took."""

    n_tokens: int
    n_steps: int
    fvu: dict[str, float]
    dead_latents: int
    wall_seconds: float
    loss: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_squared_norm(x: torch.Tensor) -> torch.Tensor:
    return x.double().pow(2).sum(-1).mean(0)


def train_crosscoder(
    pairs: torch.Tensor,
    config: CrosscoderConfig,
    *,
    seed: int = 0,
    progress: bool = False,
    decoder_bias: bool = True,
) -> tuple[Crosscoder, CrosscoderLog]:
    """Train a crosscoder on ``pairs``, ``[n_tokens, n_models, d_in]`` activations of the models on the same
    tokens (held in memory: an audit's activations are a few tens of thousands of tokens). Deterministic
    given ``seed`` (on one thread count). ``decoder_bias=False`` holds ``b_dec`` at 0, so the latents
    write everything, a part every token shares included (for a dictionary of differences, where that
    shared part is a change to be read, not an offset to remove)."""
    if pairs.ndim != 3 or pairs.shape[0] < 2:
        raise IrmscopeError(
            f"a crosscoder trains on [tokens, models, width] activations, not {tuple(pairs.shape)}"
        )
    if not torch.isfinite(pairs).all():
        raise IrmscopeError("the paired activations hold NaN or infinite values; check both models' outputs")
    n, n_models, d_in = pairs.shape
    generator = torch.Generator().manual_seed(seed)
    coder = Crosscoder(d_in, config.expansion * d_in, config.k, n_models, generator=generator)
    pairs = pairs.float()
    with torch.no_grad():
        coder.scale.copy_((d_in / _mean_squared_norm(pairs).clamp_min(1e-30)).sqrt().float())
        if decoder_bias:
            coder.b_dec.copy_((pairs * coder.scale[:, None]).mean(0))
    coder.b_dec.requires_grad_(decoder_bias)
    optimizer = adam([p for p in coder.parameters() if p.requires_grad], lr=config.lr)
    tracker = DeadLatentTracker(coder.d_sae, config.dead_window)
    steps_per_epoch = -(-n // config.batch_size)
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(
        total=steps_per_epoch * config.epochs, desc="training crosscoder", unit="step", disable=not progress
    )
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        running = 0.0
        for batch in order.split(config.batch_size):
            pre = coder.encode_pre(pairs[batch])
            x = pairs[batch] * coder.scale[:, None]  # the target, in the scaled units the decoder writes
            values, indices = coder.top_k(pre)
            recon = coder.decode_scaled(values, indices)
            loss = (recon - x).pow(2).mean()
            latents = torch.zeros_like(pre).scatter(-1, indices, values)
            if config.aux_k_coefficient:
                error = (x - recon).flatten(1)
                dead = tracker.silent_for_window
                loss = loss + config.aux_k_coefficient * auxk_loss(coder.W_dec.flatten(1), error, pre, dead)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            tracker.update(latents.detach())
            running += float(loss.detach())
            bar.update(1)
        losses.append(running / steps_per_epoch)
        if not math.isfinite(losses[-1]):
            raise IrmscopeError(f"crosscoder training diverged (loss {losses[-1]}); lower its learning rate")
        bar.set_postfix(loss=f"{losses[-1]:.4g}")
    bar.close()
    coder.eval()
    log = CrosscoderLog(
        n_tokens=n,
        n_steps=steps_per_epoch * config.epochs,
        fvu=dict(zip(MODELS[:n_models], fraction_unexplained(coder, pairs), strict=True)),
        dead_latents=int(tracker.dead_mask.sum()),
        wall_seconds=time.perf_counter() - start,
        loss=losses,
    )
    return coder, log


@torch.no_grad()
def fraction_unexplained(coder: Crosscoder, pairs: torch.Tensor, batch_size: int = 4096) -> list[float]:
    """Each model's fraction of variance unexplained by the crosscoder's reconstruction of ``pairs``."""
    error = torch.zeros(coder.n_models, dtype=torch.float64)
    for batch in pairs.split(batch_size):
        error += (coder(batch)[0] - batch.float()).double().pow(2).sum((0, 2))
    variance = (pairs.double() - pairs.double().mean(0)).pow(2).sum((0, 2))
    return (error / variance.clamp_min(1e-30)).tolist()


def save_crosscoder(coder: Crosscoder, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the weights (safetensors) and ``cfg.json`` (shape, and ``metadata`` such as the site) as one
    folder, replacing an earlier one; a killed writer leaves no half-written folder under the name."""
    tensors = {name: tensor.detach().contiguous() for name, tensor in coder.state_dict().items()}
    config = {**coder.config_dict(), "models": list(MODELS), "metadata": metadata or {}}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / CROSSCODER_WEIGHTS))
        write_json(tmp / CROSSCODER_CONFIG, config)

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    return atomic_write_dir(out, write)


def load_crosscoder(folder: str | Path) -> Crosscoder:
    """Load what :func:`save_crosscoder` wrote."""
    folder = Path(folder)
    if not (folder / CROSSCODER_WEIGHTS).is_file() or not (folder / CROSSCODER_CONFIG).is_file():
        raise IrmscopeError(f"{folder} holds no crosscoder ({CROSSCODER_WEIGHTS} and {CROSSCODER_CONFIG})")
    cfg = json.loads((folder / CROSSCODER_CONFIG).read_text())
    coder = Crosscoder(cfg["d_in"], cfg["d_sae"], cfg["k"], cfg["n_models"])
    coder.load_state_dict(load_file(str(folder / CROSSCODER_WEIGHTS)))
    return coder.eval()
