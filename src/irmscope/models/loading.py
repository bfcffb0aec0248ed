"""One loader for every model irmscope studies.

``load_model(spec)`` accepts:

* a packaged model name: ``smollm2-135m`` (the default) or ``gemma3-270m`` (see :mod:`.packaged`);
* ``tiny-<family>``: a tiny random-weight model for tests (see :mod:`.tiny`);
* a local Hugging Face folder (``config.json`` + weights), e.g. a model irmscope tuned;
* a hub id (``owner/name``): works with a network; offline it fails at once with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from irmscope.errors import IrmscopeError
from irmscope.hub import hub_offline, hub_reachable
from irmscope.io import atomic_write_dir
from irmscope.models.accounting import count_tokens
from irmscope.models.adapters import SITE_KINDS, ArchitectureAdapter, adapter_for, all_sites
from irmscope.models.packaged import packaged_checkpoint
from irmscope.models.sources import DEFAULT_MODEL, resolve_model_source
from irmscope.models.tiny import build_tiny
from irmscope.models.tokenizer_copies import folder_tokenizer
from irmscope.paths import cache_dir


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer (left-padded, with a pad token) and its hook-site adapter.

    :func:`load_model` gives the tokenizers of a local or tiny model copies that share one Rust backend
    (:mod:`irmscope.models.tokenizer_copies`): a tokenizer that will have tokens added, or be saved after
    it has been called, needs ``copy.deepcopy`` as soon as it is loaded."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    adapter: ArchitectureAdapter = field(init=False)

    def __post_init__(self) -> None:
        self.adapter = adapter_for(self.model)
        self.model.eval()
        count_tokens(self.model)  # every pass's tokens, for the stages' compute floors (see .accounting)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Left padding keeps every row's last prompt token at the end, which generation needs.
        self.tokenizer.padding_side = "left"

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers(self.model)

    @property
    def d_model(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    def sites(self, kinds: tuple[str, ...] = SITE_KINDS) -> list[str]:
        """Every hook site of the given kinds, layer by layer."""
        return all_sites(self.n_layers, kinds)


def load_model(
    spec: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0
) -> LoadedModel:
    """Load ``spec`` (see the module docstring) ready for inference on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, value = resolve_model_source(spec)
    if kind == "tiny":
        model, tokenizer = build_tiny(value, seed=seed)
    else:
        source = str(packaged_checkpoint(value)) if kind == "packaged" else value
        # Offline, or with the hub out of reach, look only in the local hub cache: huggingface_hub would
        # otherwise retry for about 25 s before giving up.
        local_only = kind != "hub" or hub_offline() or not hub_reachable()
        try:
            tokenizer = (
                AutoTokenizer.from_pretrained(source, local_files_only=local_only)
                if kind == "hub"
                else folder_tokenizer(source)  # read once per process: stages load one model many times
            )
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_only)
        except (OSError, ValueError) as err:
            if kind == "hub":
                why = (
                    f"the hub is offline ({'HF_HUB_OFFLINE=1' if hub_offline() else 'unreachable'}) "
                    "and the model is not in the local cache"
                    if local_only
                    else f"download failed ({type(err).__name__})"
                )
                raise IrmscopeError(
                    f"could not load model {spec!r} from the Hugging Face hub: {why}; "
                    "pass a local folder or a packaged model (see `irmscope models`)"
                ) from err
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise IrmscopeError(f"could not load model from {source}: {first_line}") from err
    model = model.to(device=device, dtype=dtype)
    return LoadedModel(model=model, tokenizer=tokenizer, name=spec)


def model_path(spec: str, seed: int = 0) -> str:
    """A folder (or hub id) from which ``from_pretrained`` loads ``spec``: what trainers that reload the
    reference model from ``config._name_or_path`` (TRL with a KL penalty) need instead of a model in memory.
    Tiny models are saved once to the cache."""
    kind, value = resolve_model_source(spec)
    if kind == "packaged":
        return str(packaged_checkpoint(value))
    if kind == "tiny":
        target = cache_dir() / "models" / f"tiny-{value}-seed{seed}"
        if not (target / "config.json").is_file():
            model, tokenizer = build_tiny(value, seed=seed)

            def write(tmp: Path) -> None:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)

            atomic_write_dir(target, write)
        return str(target)
    return value


def load_tokenizer(spec: str, seed: int = 0) -> Any:
    """Just the tokenizer of ``spec`` (no weights loaded), with a pad token; padding side left as saved."""
    from transformers import AutoTokenizer

    # read, not a shared copy (:mod:`.tokenizer_copies`): the tuning stage saves it after TRL's calls
    tokenizer = AutoTokenizer.from_pretrained(model_path(spec, seed=seed))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
