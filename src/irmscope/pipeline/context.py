"""What every stage of one run can reach: the config, the finished stages, and models loaded at most once."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from irmscope.artifacts import PLANTED_LEXICON, TUNED_MODEL, Prompts, Samples
from irmscope.config import RunConfig
from irmscope.data import load_reviews
from irmscope.models import Sampling, load_model
from irmscope.rewards import LexiconReward, Reward, load_reward
from irmscope.sae import SAE, load_sae
from irmscope.stages import PART_SECONDS, StageResult

#: Named orders of the evaluation split's reviews. Each use that must not see the same reviews in the
#: same order as another gets its own seed offset, named here rather than written as ``seed + k``.
REVIEW_ORDERS = {"prompts": 0, "contexts": 1, "probes": 2}


@dataclass
class RunContext:
    """One pipeline run: its config, the stages finished so far, and lazily loaded models and data."""

    config: RunConfig
    progress: bool = True
    finished: dict[str, StageResult] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def seed(self) -> int:
        return self.config.seed

    @functools.cached_property
    def base(self):
        """The base model (loaded on first use)."""
        return load_model(self.config.model.name, seed=self.config.seed)

    @property
    def reward_spec(self) -> str:
        """The reward as a spec ``load_reward`` reads; a planted lexicon is read from its stage's file."""
        if "planted-lexicon" in self.finished:
            return f"lexicon:{self.finished['planted-lexicon'].dir / PLANTED_LEXICON}"
        return self.config.reward.spec

    @functools.cached_property
    def reward(self) -> Reward:
        return load_reward(self.reward_spec)

    @property
    def lexicon(self):
        """The reward's lexicon, or ``None`` for a reward that is not a word list."""
        return self.reward.lexicon if isinstance(self.reward, LexiconReward) else None

    @property
    def tunes_a_model(self) -> bool:
        """Whether this run tunes its own model (not given one, and not studying the base model alone)."""
        return self.config.model.tuned is None and self.config.tune.algorithm != "none"

    @property
    def tuned_spec(self) -> str | None:
        """The model studied as tuned: the one given (``model.tuned``), else the tune stage's, else none."""
        if self.config.model.tuned:
            return self.config.model.tuned
        if "tune" in self.finished:
            return str(self.finished["tune"].dir / TUNED_MODEL)
        return None

    @functools.cached_property
    def tuned(self):
        """The tuned model (loaded on first use)."""
        if self.tuned_spec is None:
            raise RuntimeError("this run has no tuned model")
        return load_model(self.tuned_spec)

    @property
    def sampling(self) -> Sampling:
        """How every stage samples completions: the config's generation settings and the run's seed, so
        completions of the same prompts by the same model are the same in every stage."""
        return Sampling(**self.config.generation.model_dump(), seed=self.seed, progress=self.progress)

    def model(self, label: str):
        """The model called ``label`` ("tuned" or "base")."""
        return self.tuned if label == "tuned" else self.base

    @property
    def subjects(self) -> dict[str, str]:
        """The studied models by label: tuned and base, or the base model alone."""
        if self.tuned_spec:
            return {"tuned": self.tuned_spec, "base": self.config.model.name}
        return {"base": self.config.model.name}

    @property
    def sites(self) -> list[str]:
        return self.finished["sites"].summary["sites"]

    def read_json(self, stage: str, name: str) -> Any:
        """A JSON file a finished stage wrote."""
        return json.loads((self.finished[stage].dir / name).read_text())

    @property
    def prompts(self) -> Prompts:
        return Prompts.load(self.finished["prompts"].dir)

    @property
    def evaluation_prompts(self) -> list[str]:
        return self.prompts.test

    @functools.cached_property
    def samples(self) -> Samples:
        """The evaluate stage's prompts, completions and scores (read once)."""
        return Samples.load(self.finished["evaluate"].dir)

    def saes(self, label: str) -> dict[str, SAE]:
        """The dictionaries trained on the ``label`` model's activations, by site."""
        folder = self.finished[f"saes-{label}"].dir
        return {site: load_sae(folder / site) for site in self.sites}

    def reviews(self, order: str, split: str | None = None) -> pd.DataFrame:
        """The reviews of ``split`` (default: the evaluation split) in the named seeded order."""
        return load_reviews(
            self.config.data.source,
            split=split or self.config.data.split,
            seed=self.config.seed + REVIEW_ORDERS[order],
        )

    def stage_outputs(self, name: str) -> dict[str, Any] | None:
        """A finished stage's summary without its bookkeeping (settings, timing, token counts), for
        results.json."""
        if name not in self.finished:
            return None
        summary = self.finished[name].summary
        bookkeeping = ("settings", "stage_seconds", "tokens", PART_SECONDS)
        return {k: v for k, v in summary.items() if k not in bookkeeping}
