"""Save and load SAEs in SAELens's folder layout, so either library reads the other's files.

A folder holds two files, as SAELens 6.x's ``SAE.save_model`` writes them:

* ``sae_weights.safetensors``: ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in], ``b_enc`` [d_sae],
  ``b_dec`` [d_in] (a tied SAE writes its encoder out as ``W_dec.T``; SAELens has no tied SAEs);
* ``cfg.json``: ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
  ``normalize_activations``, ``reshape_activations``, ``metadata`` (``sae_lens_version``, ``hook_name``,
  ``model_name``, ...), ``architecture`` (``"standard"`` for our ReLU SAE, ``"topk"``), and for TopK
  ``k`` and ``rescale_acts_by_decoder_norm``.

A third file, ``irmscope_digest.json``, records the size and sha256 of the weights file as written, so a
truncated or corrupted copy is reported as such instead of failing deep inside safetensors or, worse,
loading changed weights. It is a separate file rather than a ``cfg.json`` key because SAELens reads and
rewrites ``cfg.json`` (a digest kept in its ``metadata`` could be carried into a folder SAELens saves with
other weights), while it never reads files it does not know. A folder without it (written by SAELens or an
older irmscope) loads without the check.

``metadata.sae_lens_version`` names the SAELens release whose format this is (SAELens reads files without
a 6.x version as its older format); ``metadata.irmscope`` records what SAELens has no field for (tied
weights, the irmscope version). Loading reads safetensors only, never a pickle, and accepts SAELens's own
``standard`` and ``topk`` SAEs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from irmscope import __version__
from irmscope.errors import IrmscopeError, one_line
from irmscope.io import atomic_write, file_digest, verify_file, write_json
from irmscope.sae.model import DTYPES, SAE, SAEConfig

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
SAE_DIGEST_FILENAME = "irmscope_digest.json"
SAELENS_FORMAT_VERSION = "6.54.12"
_TO_SAELENS = {"relu": "standard", "topk": "topk"}
_FROM_SAELENS = {"standard": "relu", "topk": "topk"}


def sae_lens_config(sae: SAE, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``cfg.json`` contents SAELens 6.x writes for an SAE like ``sae``."""
    config = sae.config
    meta: dict[str, Any] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        **sae.metadata,
        **(metadata or {}),
    }
    meta["irmscope"] = {"version": __version__, "architecture": config.architecture, "tied": config.tied}
    cfg: dict[str, Any] = {
        "d_in": config.d_in,
        "d_sae": config.d_sae,
        "dtype": config.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": config.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
        "architecture": _TO_SAELENS[config.architecture],
    }
    if config.architecture == "topk":
        cfg["k"] = config.k
        cfg["rescale_acts_by_decoder_norm"] = False
    return cfg


def save_sae(
    sae: SAE,
    path: str | Path,
    hook_name: str | None = None,
    model_name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``sae`` to the folder ``path`` (created if needed; each file replaced atomically).

    The old digest goes first and the new one is written after the weights, so a save killed half way never
    leaves a digest that describes other weights (at worst the folder loads unchecked).
    """
    path = Path(path)
    extra = dict(metadata or {})
    if hook_name is not None:
        extra["hook_name"] = hook_name
    if model_name is not None:
        extra["model_name"] = model_name
    tensors = {
        "W_dec": sae.W_dec,
        "W_enc": sae.W_enc,
        "b_dec": sae.b_dec,
        "b_enc": sae.b_enc,
    }
    tensors = {name: value.detach().to("cpu").contiguous().clone() for name, value in tensors.items()}
    (path / SAE_DIGEST_FILENAME).unlink(missing_ok=True)
    atomic_write(path / SAE_WEIGHTS_FILENAME, lambda tmp: save_file(tensors, str(tmp)))
    write_json(path / SAE_DIGEST_FILENAME, {SAE_WEIGHTS_FILENAME: file_digest(path / SAE_WEIGHTS_FILENAME)})
    write_json(path / SAE_CFG_FILENAME, sae_lens_config(sae, extra))
    return path


def load_sae(path: str | Path, device: str | torch.device = "cpu", dtype: str | None = None) -> SAE:
    """Read an SAE folder written by :func:`save_sae` or by SAELens (``standard`` or ``topk``)."""
    path = Path(path)
    cfg_path, weights_path = path / SAE_CFG_FILENAME, path / SAE_WEIGHTS_FILENAME
    if not cfg_path.is_file() or not weights_path.is_file():
        raise IrmscopeError(
            f"{path} is not an SAE folder (needs {SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME}); "
            "give a folder written by irmscope or SAELens"
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise IrmscopeError(f"{cfg_path} is not valid JSON ({err.msg}); re-save the SAE") from None
    architecture = cfg.get("architecture", "standard")
    if architecture not in _FROM_SAELENS:
        raise IrmscopeError(
            f"{path} holds a {architecture!r} SAE; irmscope reads SAELens's standard and topk SAEs only"
        )
    for key, allowed in (("normalize_activations", "none"), ("reshape_activations", "none")):
        if cfg.get(key, allowed) != allowed:
            raise IrmscopeError(
                f"{path} needs {key}={cfg[key]!r}, which irmscope does not apply; fold it into the weights "
                "with SAELens first"
            )
    metadata = dict(cfg.get("metadata") or {})
    ours = metadata.pop("irmscope", None) or {}
    dtype_name = str(dtype or cfg.get("dtype", "float32")).removeprefix("torch.")
    if dtype_name not in DTYPES:
        raise IrmscopeError(
            f"{cfg_path} names an unknown dtype {dtype_name!r}; use one of {', '.join(DTYPES)}"
        )
    config = SAEConfig(
        d_in=int(cfg["d_in"]),
        d_sae=int(cfg["d_sae"]),
        architecture=_FROM_SAELENS[architecture],  # type: ignore[arg-type]
        k=int(cfg["k"]) if architecture == "topk" else None,
        tied=bool(ours.get("tied", False)),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        dtype=dtype_name,
    )
    weights = _read_weights(path)
    expected = {
        "W_enc": (config.d_in, config.d_sae),
        "W_dec": (config.d_sae, config.d_in),
        "b_enc": (config.d_sae,),
        "b_dec": (config.d_in,),
    }
    for name, shape in expected.items():
        if name not in weights or tuple(weights[name].shape) != shape:
            found = tuple(weights[name].shape) if name in weights else "missing"
            raise IrmscopeError(f"{weights_path}: {name} should have shape {shape}, found {found}")
    weights = {name: weights[name].to(config.torch_dtype) for name in expected}
    if architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        _fold_decoder_norms(weights)
    if config.tied and not torch.equal(weights["W_enc"], weights["W_dec"].T):
        raise IrmscopeError(f"{path} says its SAE is tied but W_enc is not W_dec transposed; re-save it")
    sae = SAE(config)
    with torch.no_grad():
        sae.W_dec.copy_(weights["W_dec"])
        if not config.tied:
            sae.W_enc.copy_(weights["W_enc"])
        sae.b_enc.copy_(weights["b_enc"])
        sae.b_dec.copy_(weights["b_dec"])
    metadata.pop("sae_lens_version", None)  # rewritten as the format version on save
    sae.metadata = metadata
    return sae.to(device)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``'s weights file, checked against its recorded digest when there is one."""
    weights_path, digest_path = path / SAE_WEIGHTS_FILENAME, path / SAE_DIGEST_FILENAME
    fix = f"delete the folder {path} and train the SAE again"
    problem = None
    if digest_path.is_file():
        try:
            recorded = json.loads(digest_path.read_text()).get(SAE_WEIGHTS_FILENAME)
        except (json.JSONDecodeError, AttributeError):
            raise IrmscopeError(f"{digest_path} is not a valid digest file; {fix}") from None
        problem = verify_file(weights_path, recorded) if isinstance(recorded, dict) else None
    if problem is not None:
        raise IrmscopeError(f"SAE weights {problem}; {fix}")
    try:
        return load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise IrmscopeError(f"SAE weights {weights_path} cannot be read ({one_line(err)}); {fix}") from None


def _fold_decoder_norms(weights: dict[str, torch.Tensor]) -> None:
    """Turn a TopK SAE that ranks ``pre * ||W_dec row||`` into an equivalent one with unit decoder rows."""
    norms = weights["W_dec"].norm(dim=1).clamp_min(1e-8)
    weights["W_enc"] = weights["W_enc"] * norms
    weights["b_enc"] = weights["b_enc"] * norms
    weights["W_dec"] = weights["W_dec"] / norms[:, None]
