"""The sparse autoencoder (SAE) module: ReLU (the paper's) or TopK, tied or untied, unit-norm dictionary rows.

Shapes follow SAELens so a saved SAE loads there unchanged: ``W_enc`` is ``[d_in, d_sae]``, ``W_dec`` is
``[d_sae, d_in]`` (row ``i`` is dictionary feature ``i``), ``b_enc`` is ``[d_sae]`` and ``b_dec`` is
``[d_in]``. The forward pass is::

    latents        = act((x - b_dec) @ W_enc + b_enc)     act = ReLU, or ReLU of the k largest
    reconstruction = latents @ W_dec + b_dec

(``b_dec`` is subtracted before encoding when ``apply_b_dec_to_input``, as in SAELens.) With ``tied=True``
the encoder *is* the decoder's transpose (§4.2 of the main paper: "The decoder and encoder weights were
tied"), so there is one weight matrix. Training keeps every dictionary row at unit norm; see
:meth:`SAE.normalize_decoder_` and :meth:`SAE.remove_parallel_gradient_`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from irmscope.errors import IrmscopeError

Architecture = Literal["relu", "topk"]
ARCHITECTURES: tuple[str, ...] = ("relu", "topk")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class SAEConfig:
    """The shape of an SAE: what :class:`SAE` needs to build its parameters.

    ``architecture`` is ``"relu"`` (the paper's: ReLU encoder, trained with an L1 penalty) or ``"topk"``
    (exactly ``k`` latents may be active per token; no penalty needed). ``tied`` shares one matrix between
    encoder and decoder.
    """

    d_in: int
    d_sae: int
    architecture: Architecture = "relu"
    k: int | None = None
    tied: bool = False
    apply_b_dec_to_input: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.d_in, int) or self.d_in < 1:
            raise IrmscopeError(f"SAE d_in must be a positive integer, not {self.d_in!r}")
        if not isinstance(self.d_sae, int) or self.d_sae < 1:
            raise IrmscopeError(
                f"SAE d_sae (the dictionary size) must be a positive integer, not {self.d_sae!r}"
            )
        if self.architecture not in ARCHITECTURES:
            raise IrmscopeError(
                f"unknown SAE architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        if self.architecture == "topk":
            if self.k is None or not isinstance(self.k, int) or self.k < 1:
                raise IrmscopeError(f"a topk SAE needs k >= 1 active latents, not k={self.k!r}")
            if self.k > self.d_sae:
                raise IrmscopeError(f"topk SAE k={self.k} exceeds d_sae={self.d_sae}; choose k <= d_sae")
        elif self.k is not None:
            raise IrmscopeError("k applies only to architecture='topk'; drop k or set architecture='topk'")
        if self.dtype not in DTYPES:
            raise IrmscopeError(f"unknown SAE dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def describe(self) -> str:
        k = f", k={self.k}" if self.architecture == "topk" else ""
        return f"d_in={self.d_in}, d_sae={self.d_sae}, architecture={self.architecture}{k}, tied={self.tied}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


class SAEOutput(NamedTuple):
    """What :meth:`SAE.forward` returns: the input's reconstruction and the latent activations."""

    reconstruction: torch.Tensor
    latents: torch.Tensor


class SAE(nn.Module):
    """A sparse autoencoder over activations of width ``d_in`` with ``d_sae`` dictionary features."""

    def __init__(self, config: SAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        dtype = config.torch_dtype
        # Random unit-norm dictionary rows; the untied encoder starts as their transpose, a common init
        # that makes every latent initially read the direction it writes.
        w_dec = torch.randn(config.d_sae, config.d_in, generator=generator, dtype=torch.float32)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        if not config.tied:
            self.W_enc = nn.Parameter(w_dec.T.contiguous().to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(config.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(config.d_in, dtype=dtype))
        # Where the SAE came from (hook_name, model_name, ...): written to and read from SAELens's
        # cfg.json "metadata" by :mod:`irmscope.sae.io`.
        self.metadata: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        # A tied SAE has no encoder parameter: its ``W_enc`` ([d_in, d_sae]) is a view of ``W_dec.T``, so
        # code written for SAELens's attribute names works on both kinds.
        if name == "W_enc" and self.__dict__["config"].tied:
            return self.W_dec.T
        return super().__getattr__(name)

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def d_sae(self) -> int:
        return self.config.d_sae

    @property
    def dictionary(self) -> torch.Tensor:
        """The ``[d_sae, d_in]`` dictionary (decoder rows), detached: what MMCS compares (Eq. 2)."""
        return self.W_dec.detach()

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """Latent pre-activations, before the ReLU / TopK."""
        x = x.to(self.W_dec.dtype)
        if self.config.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """ReLU, or (TopK) ReLU of the ``k`` largest pre-activations with every other latent at zero."""
        if self.config.architecture == "relu":
            return torch.relu(pre)
        values, indices = self._top_k(pre)
        return torch.zeros_like(pre).scatter(-1, indices, values)

    def _top_k(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` active latents of each row: their ReLU'd values and their indices."""
        values, indices = torch.topk(pre, k=self.config.k, dim=-1, sorted=False)  # type: ignore[arg-type]
        return torch.relu(values), indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.encode_pre(x))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> SAEOutput:
        return self.forward_from_pre(self.encode_pre(x))

    def forward_from_pre(self, pre: torch.Tensor) -> SAEOutput:
        """The reconstruction and latents from the pre-activations (training reuses them for AuxK)."""
        if self.config.architecture == "relu":
            latents = torch.relu(pre)
            return SAEOutput(self.decode(latents), latents)
        # TopK decodes from its k active rows only: a weighted sum of k dictionary rows (embedding_bag),
        # k/d_sae of the dense product's work, forward and backward. The dense latents are still returned
        # (for the loss terms, L0 and dead-latent counts); they are cheap to scatter.
        values, indices = self._top_k(pre)
        k = values.shape[-1]
        rows = nn.functional.embedding_bag(
            indices.reshape(-1, k), self.W_dec, per_sample_weights=values.reshape(-1, k), mode="sum"
        )
        reconstruction = rows.reshape(*pre.shape[:-1], self.d_in) + self.b_dec
        return SAEOutput(reconstruction, torch.zeros_like(pre).scatter(-1, indices, values))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``x``'s reconstruction in ``x``'s own dtype: the function to splice into a model's forward pass."""
        return self(x).reconstruction.to(x.dtype)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every dictionary row to unit norm.

        Without it the L1 penalty is gamed: shrink the latents and grow the rows, and the penalty falls
        while the reconstruction stays the same. Unit rows also make decoder rows comparable by cosine.
        """
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_gradient_(self) -> None:
        """Drop the part of each row's gradient that points along the row (it would only change its norm,
        which :meth:`normalize_decoder_` undoes), so Adam's step is spent on directions alone."""
        grad = self.W_dec.grad
        if grad is None:
            return
        rows = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        grad.sub_((grad * rows).sum(dim=1, keepdim=True) * rows)

    def extra_repr(self) -> str:
        return self.config.describe()
