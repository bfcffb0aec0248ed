"""What a leaderboard method is: anything that turns the coverage completions into reward estimates.

A method is one module in :mod:`irmscope.leaderboard.methods` that calls :func:`register` with an instance
of :class:`RewardEstimator`; nothing else needs editing. Its :meth:`RewardEstimator.estimate` gets the
coverage set, both models and the folders of the pipeline stages it may read (``needs`` names them), and
returns one estimate per completion for the tuned model and one for the untuned base model (the control
every number sits beside); a ``None`` base means the method has no base-model version and says why in
``base_note``, and returning ``None`` altogether means the method does not apply to this run (its row is
left out). A method that needs a model's likelihood of the completions asks
:meth:`MethodInputs.likelihoods`, so the methods share one forward pass per model (none at all for the
tuned and base models in the pipeline, whose read-samples stage read them already).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.data.samples import Coverage
from irmscope.data.triples import LexiconLike
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel
from irmscope.models.reading import CompletionLikelihoods, completion_likelihoods
from irmscope.validation import Precision


@dataclass(frozen=True)
class MethodInputs:
    coverage: Coverage
    tuned: LoadedModel
    base: LoadedModel
    stages: Mapping[str, Path]  # finished pipeline stages by name (e.g. "elicit", "probes")
    dpo_beta: float
    seed: int
    other_policies: Mapping[str, LoadedModel] = field(default_factory=dict)  # e.g. {"dpo": a DPO checkpoint}
    lexicon: LexiconLike | Mapping[str, float] | None = None  # the known reward's words, when a lexicon
    review_texts: Sequence[str] = ()  # unlabelled in-domain texts (to cut contrast pairs from)
    # the tuned and base models' likelihoods of the coverage completions, when read already (the pipeline's
    # read-samples stage keeps them), by "tuned" / "base"
    read_likelihoods: Mapping[str, CompletionLikelihoods] = field(default_factory=dict)
    # matrix products of passes that only read residuals for a fit (CCS's contrast pairs); likelihoods are
    # read in float32 whatever is set (see irmscope.models.precision)
    readout_precision: Precision = "float32"
    # per model: (the model, its likelihoods); not an argument, so dataclasses.replace starts a new cache
    _likelihoods: dict[int, tuple[LoadedModel, CompletionLikelihoods]] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def likelihoods(self, policy: LoadedModel) -> CompletionLikelihoods:
        """``policy``'s :class:`CompletionLikelihoods` of the coverage completions, computed on first use
        and kept: the likelihood-based methods share one pass per model (the base model's serves three
        rows). The cache holds the model itself, so its id cannot be reused by another while it is kept.
        The tuned and base models' are taken from ``read_likelihoods`` when given."""
        for label, model in (("tuned", self.tuned), ("base", self.base)):
            if policy is model and label in self.read_likelihoods:
                return self.read_likelihoods[label]
        kept = self._likelihoods.get(id(policy))
        if kept is None or kept[0] is not policy:
            kept = (policy, completion_likelihoods(policy, self.coverage.prompts, self.coverage.completions))
            self._likelihoods[id(policy)] = kept
        return kept[1]

    def stage(self, name: str) -> Path:
        if name not in self.stages:
            raise IrmscopeError(f"stage {name!r} has not run; the methods needing it cannot be scored")
        return self.stages[name]


@dataclass(frozen=True)
class Estimates:
    tuned: np.ndarray
    base: np.ndarray | None
    base_note: str = ""
    details: dict[str, Any] = field(
        default_factory=dict
    )  # JSON-able extras the method reports beside its row


class RewardEstimator(ABC):
    """One row of the leaderboard."""

    #: short row label
    name: str
    #: one sentence: what the estimate is and what it was fitted on (supervised methods say so)
    description: str
    #: pipeline stages whose folders :meth:`estimate` reads
    needs: tuple[str, ...] = ()
    #: whether the method saw known-reward labels of coverage-like data (cross-fitted if so)
    supervised: bool = False
    #: the metrics the estimate identifies (None: all). A reward known only up to a constant per prompt
    #: (inverse RL's conditional logit) identifies the within-prompt metrics alone: preference accuracy
    #: and EPIC, which removes each prompt's mean; its pooled and within-model correlations also read the
    #: between-prompt variation the fit never saw, so they are reported but marked
    identified: tuple[str, ...] | None = None

    @abstractmethod
    def estimate(self, inputs: MethodInputs) -> Estimates | None: ...


METHODS: dict[str, RewardEstimator] = {}


def register(method: RewardEstimator) -> RewardEstimator:
    """Add ``method`` to the leaderboard (called once at import by the method's module)."""
    if method.name in METHODS:
        raise IrmscopeError(f"two leaderboard methods are named {method.name!r}; rename one")
    METHODS[method.name] = method
    return method
