"""How good is an SAE: reconstruction, sparsity, dead latents, and the LM loss when it replaces its site.

Reconstruction and sparsity stream over any amount of activations (:func:`evaluate_sae`). The LM-loss
figures (:func:`spliced_lm_loss`) are the standard downstream test: splice the SAE's reconstruction into the
forward pass at its site and see how much next-token loss rises, next to the rise from zero-ablating the
site, which puts the number on a scale (an SAE that recovers nothing is as bad as ablation).

Appendix J of the main paper reports, per layer and averaged over the high-divergence layers, a *normalised
reconstruction loss* and a *"true" sparsity loss* ("the average number of non-zero positions in the
dictionary features"), the latter divided by 100 for plotting (Fig. 5, Tables 12 and 13).
:func:`appendix_j_figures` computes those from an :class:`SAEMetrics`; see its docstring for the readings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from irmscope.activations import ActivationStore
from irmscope.errors import IrmscopeError
from irmscope.models.generation import encoded_batches
from irmscope.models.hooks import ablate, replace
from irmscope.models.loading import LoadedModel
from irmscope.sae.model import SAE


@torch.no_grad()
def mse(x: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """Mean squared error over tokens and dimensions (the training objective's first term)."""
    return float((reconstruction.double() - x.double()).pow(2).mean())


@torch.no_grad()
def fvu(x: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """Fraction of variance unexplained: summed squared error / summed squared deviation from the mean.

    0 is a perfect reconstruction; 1 is no better than predicting every token's mean activation.
    """
    x = x.double()
    deviation = (x - x.mean(dim=0)).pow(2).sum()
    return float((reconstruction.double() - x).pow(2).sum() / deviation.clamp_min(1e-300))


@torch.no_grad()
def l0(latents: torch.Tensor) -> float:
    """Mean number of active (non-zero) latents per token."""
    return float((latents != 0).sum(dim=-1).double().mean())


@torch.no_grad()
def dead_fraction(latents: torch.Tensor) -> float:
    """Fraction of latents that are zero on every given token."""
    return float(((latents != 0).sum(dim=0) == 0).double().mean())


@dataclass
class SAEMetrics:
    """Reconstruction and sparsity of an SAE over ``n_tokens`` activations."""

    n_tokens: int
    mse: float
    fvu: float
    normalized_mse: float
    l0: float
    l1: float
    dead_fraction: float
    decoder_row_nonzero: float
    d_in: int
    d_sae: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@torch.no_grad()
def evaluate_sae(
    sae: SAE,
    data: ActivationStore | torch.Tensor | Iterable[torch.Tensor],
    site: str | None = None,
    batch_size: int = 4096,
    max_tokens: int | None = None,
) -> SAEMetrics:
    """Stream ``data`` (a store with ``site``, a ``[n, d_in]`` tensor, or batches) through ``sae``.

    FVU uses the exact variance of all the tokens seen (merged batch by batch, Chan et al.'s update), not a
    per-batch one. A latent is dead here if it fires on none of the tokens.
    """
    if isinstance(data, ActivationStore):
        if site is None or site not in data.sites:
            raise IrmscopeError(
                f"name a site of the activation cache at {data.root} to evaluate on: {', '.join(data.sites)}"
            )
        batches: Iterable[torch.Tensor] = data.iter_batches(site, batch_size=batch_size)
    elif isinstance(data, torch.Tensor):
        batches = data.split(batch_size)
    else:
        batches = data
    device = sae.W_dec.device
    n = 0
    mean = torch.zeros(sae.d_in, dtype=torch.float64, device=device)
    m2 = torch.zeros((), dtype=torch.float64, device=device)
    squared_error = torch.zeros((), dtype=torch.float64, device=device)
    squared_norm = torch.zeros((), dtype=torch.float64, device=device)
    active = torch.zeros((), dtype=torch.float64, device=device)
    l1_sum = torch.zeros((), dtype=torch.float64, device=device)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=device)
    for batch in batches:
        if max_tokens is not None and n >= max_tokens:
            break
        if max_tokens is not None:
            batch = batch[: max_tokens - n]
        if batch.ndim != 2 or batch.shape[1] != sae.d_in:
            raise IrmscopeError(
                f"activations of shape {tuple(batch.shape)} do not fit an SAE with d_in={sae.d_in}"
            )
        x = batch.to(device)
        recon, latents = sae(x)
        x = x.double()
        nb = x.shape[0]
        if nb == 0:
            continue
        batch_mean = x.mean(dim=0)
        batch_m2 = (x - batch_mean).pow(2).sum()
        delta = batch_mean - mean
        m2 += batch_m2 + delta.pow(2).sum() * (n * nb / (n + nb))
        mean += delta * (nb / (n + nb))
        n += nb
        squared_error += (recon.double() - x).pow(2).sum()
        squared_norm += x.pow(2).sum()
        active += (latents != 0).sum()
        l1_sum += latents.double().abs().sum()
        fired |= (latents != 0).any(dim=0)
    if n == 0:
        raise IrmscopeError("no activations to evaluate the SAE on; check the data is not empty")
    return SAEMetrics(
        n_tokens=n,
        mse=float(squared_error / (n * sae.d_in)),
        fvu=float(squared_error / m2.clamp_min(1e-300)),
        normalized_mse=float(squared_error / squared_norm.clamp_min(1e-300)),
        l0=float(active / n),
        l1=float(l1_sum / n),
        dead_fraction=float((~fired).double().mean()),
        decoder_row_nonzero=float((sae.W_dec != 0).sum(dim=1).double().mean()),
        d_in=sae.d_in,
        d_sae=sae.d_sae,
    )


def appendix_j_figures(metrics: SAEMetrics) -> dict[str, float]:
    """The two losses Appendix J tracks (Fig. 5, Tables 12–13), computed as we read them.

    * ``reconstruction_loss``: the training objective's MSE; ``normalized_reconstruction_loss``: that error
      relative to the activations' energy, sum ||x - x_hat||^2 / sum ||x||^2 (the paper does not define its
      normalisation; :attr:`SAEMetrics.fvu` is the variance-normalised alternative).
    * ``true_sparsity``: "the average number of non-zero positions in the dictionary features", read as
      the mean number of non-zero latent activations per token (L0), since that is what Eq. 8's L1 term
      trades against reconstruction and what explodes as the L1 coefficient shrinks;
      ``true_sparsity_scaled`` is it divided by 100, the scale of Fig. 5 and Tables 12–13.
    * ``decoder_row_nonzero``: the other reading (non-zero entries per decoder row), which only an L1
      penalty on the decoder weights (the wording of §4.2) would push below ``d_in``.
    """
    return dict(
        reconstruction_loss=metrics.mse,
        normalized_reconstruction_loss=metrics.normalized_mse,
        true_sparsity=metrics.l0,
        true_sparsity_scaled=metrics.l0 / 100.0,
        decoder_row_nonzero=metrics.decoder_row_nonzero,
    )


@dataclass
class SplicedLoss:
    """Mean next-token cross-entropy (nats per token) clean, with the SAE spliced in, and zero-ablated."""

    clean: float
    spliced: float
    ablated: float
    n_tokens: int

    @property
    def increase(self) -> float:
        """How much the loss rises when the site is replaced by its SAE reconstruction."""
        return self.spliced - self.clean

    @property
    def ablation_increase(self) -> float:
        """How much the loss rises when the site is set to zero: the scale for :attr:`increase`."""
        return self.ablated - self.clean

    @property
    def fraction_recovered(self) -> float:
        """1 when splicing costs nothing, 0 when it is as bad as zero-ablation."""
        scale = self.ablation_increase
        return 1.0 - self.increase / scale if scale != 0 else float("nan")

    def to_dict(self) -> dict[str, float | int]:
        return {
            **asdict(self),
            "increase": self.increase,
            "ablation_increase": self.ablation_increase,
            "fraction_recovered": self.fraction_recovered,
        }


@torch.no_grad()
def spliced_lm_loss(
    lm: LoadedModel,
    sae: SAE,
    site: str,
    texts: Sequence[str],
    batch_size: int = 8,
    max_length: int = 128,
) -> SplicedLoss:
    """The LM's loss on ``texts`` clean, with ``site`` replaced by ``sae``'s reconstruction, and ablated.

    Every position is replaced (padding included, which the attention mask hides and the loss skips).
    """
    if not texts:
        raise IrmscopeError("no texts to measure the spliced LM loss on; give at least one")
    model = lm.model
    device = next(model.parameters()).device
    sae_device = sae.W_dec.device

    def splice(act: torch.Tensor) -> torch.Tensor:
        if act.shape[-1] != sae.d_in:
            raise IrmscopeError(f"the SAE reads width {sae.d_in} but {site} has width {act.shape[-1]}")
        return sae.reconstruct(act.to(sae_device)).to(device=act.device, dtype=act.dtype)

    totals = dict(clean=0.0, spliced=0.0, ablated=0.0)
    n_tokens = 0
    for _, enc in encoded_batches(lm, texts, batch_size, max_length, device):
        totals["clean"] += _summed_loss(model, enc)
        with replace(model, site, splice):
            totals["spliced"] += _summed_loss(model, enc)
        with ablate(model, site):
            totals["ablated"] += _summed_loss(model, enc)
        mask = enc["attention_mask"].bool()
        n_tokens += int((mask[:, 1:] & mask[:, :-1]).sum())
    if n_tokens == 0:
        raise IrmscopeError("the texts have no next tokens to predict; give texts of two tokens or more")
    return SplicedLoss(**{name: total / n_tokens for name, total in totals.items()}, n_tokens=n_tokens)


def _summed_loss(model: torch.nn.Module, enc) -> float:
    """Summed next-token cross-entropy over positions whose input and target are both real tokens."""
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False).logits
    mask = enc["attention_mask"].bool()
    keep = mask[:, 1:] & mask[:, :-1]
    targets = enc["input_ids"][:, 1:][keep]
    predicted = logits[:, :-1][keep].float()
    return float(torch.nn.functional.cross_entropy(predicted, targets, reduction="sum"))
