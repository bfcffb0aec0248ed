"""A reward read off a frozen language model: a linear function of its mean-pooled residual stream.

This is how a reward recovered by inverse RL (:mod:`irmscope.irl`) becomes a reward irmscope can tune
with, closing the loop as the inverse-RL paper does: ``reward(text) = ((x - mean) / scale) @ weights``,
where ``x`` is the text's residual stream leaving block ``layer`` of ``model``, averaged over its tokens
(:func:`irmscope.models.readout.mean_pooled_residual`, the features the fit read). Like any reward
recovered by IRL it is defined up to a constant and a positive scale, so only its differences between
texts of one prompt mean anything; a policy-gradient tuner (GRPO/RLOO, which centre rewards per prompt)
needs no more.

A saved reward is a folder: ``readout_reward.json`` (the model, the block, the read-out, name and
description) and ``readout_reward.safetensors`` (``weights``, ``mean``, ``scale``). ``load_reward(
"readout:DIR")`` reads it; the model loads on first use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.errors import IrmscopeError
from irmscope.io import atomic_write, write_json
from irmscope.rewards.base import Reward

READOUT_CONFIG = "readout_reward.json"
READOUT_WEIGHTS = "readout_reward.safetensors"


class ReadoutReward(Reward):
    """``((x - mean) / scale) @ weights`` on ``model``'s mean-pooled residual stream after block ``layer``."""

    def __init__(
        self,
        model: str,
        layer: int,
        weights: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        *,
        name: str = "readout",
        description: str = "A linear read-out of a language model's residual stream",
        max_length: int | None = None,
        lm: Any = None,
    ) -> None:
        """``max_length`` cuts texts as the fit's read-outs were cut (None: never); ``lm``, when given, is
        ``model`` already loaded (a :class:`~irmscope.models.LoadedModel`), so scoring does not load it
        again."""
        super().__init__(name, description)
        arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (weights, mean, scale)]
        if len({a.size for a in arrays}) != 1 or not all(np.isfinite(a).all() for a in arrays):
            raise IrmscopeError("a read-out reward needs finite weights, mean and scale of one width")
        if (arrays[2] <= 0).any():
            raise IrmscopeError("a read-out reward's scale must be positive")
        self.model, self.layer, self.max_length = model, int(layer), max_length
        self.weights, self.mean, self.scale = arrays
        self._lm = lm

    def features(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """The read-outs of each prompt + completion, the two tokenised apart (loading the model on first
        use)."""
        from irmscope.models.loading import load_model
        from irmscope.models.readout import mean_pooled_residual

        if self._lm is None:
            self._lm = load_model(self.model)
        return mean_pooled_residual(self._lm, prompts, completions, self.layer, self.max_length)

    def of_features(self, x: np.ndarray) -> np.ndarray:
        """The reward of read-outs already computed."""
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights

    def _score(self, texts: list[str]) -> np.ndarray:
        return self.of_features(self.features([""] * len(texts), texts))

    def score_completions(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """Each completion's reward after its prompt, the two tokenised apart as the fit read them (a
        whole text can merge the prompt's last token with the completion's first)."""
        if len(prompts) != len(completions):
            raise IrmscopeError(f"{len(prompts)} prompts but {len(completions)} completions; pair them")
        scores = self.of_features(self.features(list(prompts), list(completions)))
        if not np.isfinite(scores).all():
            raise IrmscopeError(f"reward {self.name!r} gave a non-finite score; check the model's outputs")
        return scores

    def shuffled(self, seed: int) -> ReadoutReward:
        """The control for a retune: the same read-out with its weights permuted across the features (by
        ``seed``), a direction of the same size that the fit did not choose. Tuning against it shows what
        any linear reward on these features does."""
        order = np.random.default_rng(seed).permutation(self.weights.size)
        return ReadoutReward(
            self.model,
            self.layer,
            self.weights[order],
            self.mean,
            self.scale,
            name=f"{self.name}-shuffled",
            description=f"{self.description}, its weights shuffled across the features (a control)",
            max_length=self.max_length,
            lm=self._lm,
        )

    def save(self, folder: str | Path) -> Path:
        """Write the reward to ``folder`` (see the module docstring)."""
        from safetensors.numpy import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {"weights": self.weights, "mean": self.mean, "scale": self.scale}
        atomic_write(out / READOUT_WEIGHTS, lambda tmp: save_file(arrays, str(tmp)))
        model = Path(self.model)
        write_json(
            out / READOUT_CONFIG,
            {
                # a folder is stored relative to this one, so the run folder can move with its reward
                "model": os.path.relpath(model.resolve(), out.resolve()) if model.is_dir() else self.model,
                "layer": self.layer,
                "max_length": self.max_length,
                "readout": "mean-pooled blocks.L.hook_resid_post, first token left out",
                "name": self.name,
                "description": self.description,
            },
        )
        return out

    @classmethod
    def load(cls, folder: str | Path) -> ReadoutReward:
        """Read what :meth:`save` wrote."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / READOUT_CONFIG).is_file() or not (folder / READOUT_WEIGHTS).is_file():
            raise IrmscopeError(
                f"{folder} holds no read-out reward ({READOUT_CONFIG} and {READOUT_WEIGHTS}); "
                "give the folder the pipeline's irl-reward stage wrote"
            )
        config = json.loads((folder / READOUT_CONFIG).read_text())
        arrays = load_file(str(folder / READOUT_WEIGHTS))
        relative = folder / config["model"]
        return cls(
            str(relative.resolve()) if relative.is_dir() else config["model"],
            config["layer"],
            arrays["weights"],
            arrays["mean"],
            arrays["scale"],
            name=config["name"],
            description=config["description"],
            max_length=config.get("max_length"),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, layer={self.layer})"
