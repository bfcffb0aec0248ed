"""The files a pipeline stage writes, as typed artifacts: one module owns every file name in a stage folder.

Each artifact is a dataclass with ``save(folder)`` and ``load(folder)``; the stage that makes it saves it,
and everything that reads it (later stages, ``irmscope compare`` and ``edit``, the leaderboard methods,
``irmscope.runs.Run``) loads it by type instead of repeating a file-name string. The JSON result of each
stage (``elicitation.json``, ...) is named here too (:data:`RESULT_FILES`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.errors import IrmscopeError
from irmscope.io import write_json, write_npz

#: the JSON file that holds each stage's section of results.json
RESULT_FILES = {
    "elicit": "elicitation.json",
    "interpret": "interpretation.json",
    "validate": "validation.json",
    "probes": "probes.json",
    "steer": "steering.json",
    "attribute": "attribution.json",
    "leaderboard": "leaderboard.json",
    "audit": "audit.json",
}
#: the planted lexicon a ``planted-lexicon`` stage draws (word<TAB>value)
PLANTED_LEXICON = "planted.tsv"
#: the tuned model's folder inside a ``tune`` stage
TUNED_MODEL = "model"


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise IrmscopeError(f"no {what} at {path}; rerun the stage that writes it")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Prompts:
    """The review prefixes a run evaluates on (``test``) and tunes on (``train``, when it tunes)."""

    test: list[str]
    train: list[str] | None = None

    FILE = "prompts.json"

    def save(self, folder: Path) -> None:
        write_json(folder / self.FILE, {"test": self.test, **({"train": self.train} if self.train else {})})

    @classmethod
    def load(cls, folder: Path) -> Prompts:
        data = _read_json(Path(folder) / cls.FILE, "prompts")
        return cls(test=data["test"], train=data.get("train"))


@dataclass(frozen=True)
class Samples:
    """One sampled completion per evaluation prompt and model, with its known reward: what the evaluate
    stage samples once and every later stage reads (the tuned fields are ``None`` without a tuned model)."""

    prompts: list[str]
    base_completions: list[str]
    base_scores: list[float]
    tuned_completions: list[str] | None = None
    tuned_scores: list[float] | None = None

    FILE = "samples.json"

    def __post_init__(self) -> None:
        lengths = {len(self.prompts), len(self.base_completions), len(self.base_scores)}
        if self.tuned_completions is not None:
            lengths |= {len(self.tuned_completions), len(self.tuned_scores or [])}
        if len(lengths) != 1:
            raise IrmscopeError(f"samples of unequal lengths {sorted(lengths)}; rerun the evaluate stage")

    @property
    def has_tuned(self) -> bool:
        return self.tuned_completions is not None

    def completions(self, label: str) -> list[str]:
        """The completions of the ``label`` model ("tuned" or "base")."""
        return list(self.tuned_completions if label == "tuned" else self.base_completions)

    def scores(self, label: str) -> np.ndarray:
        """The known reward of each of the ``label`` model's completions."""
        return np.asarray(self.tuned_scores if label == "tuned" else self.base_scores, dtype=np.float64)

    def texts(self, label: str) -> list[str]:
        """Prompt + completion of the ``label`` model."""
        return [p + c for p, c in zip(self.prompts, self.completions(label), strict=True)]

    def save(self, folder: Path) -> None:
        write_json(folder / self.FILE, {k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def load(cls, folder: Path) -> Samples:
        return cls(**_read_json(Path(folder) / cls.FILE, "evaluation samples"))


@dataclass(frozen=True)
class Regression:
    """The IRM regression R of one model: per variant, its coefficients over the concatenated SAE features
    of the sites (in the run's site order) and its intercept."""

    coef: dict[str, np.ndarray]
    intercept: dict[str, float]

    @staticmethod
    def file(label: str) -> str:
        return f"regression-{label}.npz"

    def save(self, folder: Path, label: str) -> None:
        arrays = {f"{v}_coef": c for v, c in self.coef.items()}
        arrays |= {f"{v}_intercept": np.float64(i) for v, i in self.intercept.items()}
        write_npz(folder / self.file(label), arrays)

    @classmethod
    def load(cls, folder: Path, label: str) -> Regression:
        path = Path(folder) / cls.file(label)
        if not path.is_file():
            raise IrmscopeError(f"no regression at {path}; rerun the elicit stage")
        saved = np.load(path)
        variants = [name[: -len("_coef")] for name in saved.files if name.endswith("_coef")]
        return cls(
            {v: saved[f"{v}_coef"] for v in variants}, {v: float(saved[f"{v}_intercept"]) for v in variants}
        )


@dataclass(frozen=True)
class CoverageLikelihoods:
    """Each model's likelihoods of the evaluation samples in the coverage order (every base completion,
    then every tuned one): ``fields[label][name]`` is one array of
    :class:`~irmscope.models.reading.CompletionLikelihoods` (``log_likelihood``, ``value_after_prompt``,
    ``value_after_completion``) for the ``label`` model. The read-samples stage reads the samples with both
    models anyway, so it keeps these and the leaderboard's likelihood-based rewards do not read them again.
    """

    fields: dict[str, dict[str, np.ndarray]]

    FILE = "likelihoods.npz"

    def save(self, folder: Path) -> None:
        arrays = {f"{label}.{name}": v for label, named in self.fields.items() for name, v in named.items()}
        write_npz(Path(folder) / self.FILE, arrays)

    @classmethod
    def load(cls, folder: Path) -> CoverageLikelihoods:
        path = Path(folder) / cls.FILE
        if not path.is_file():
            raise IrmscopeError(f"no likelihoods at {path}; rerun the read-samples stage")
        saved = np.load(path)
        fields: dict[str, dict[str, np.ndarray]] = {}
        for key in saved.files:
            label, name = key.split(".", 1)
            fields.setdefault(label, {})[name] = saved[key]
        return cls(fields)


#: the read-samples stage's half of the evaluation (KL, perplexities), joined to the evaluate stage's section
LIKELIHOOD_EVALUATION = "likelihood_evaluation.json"


def coverage_residuals_file(label: str) -> str:
    """The read-samples stage's residual read-outs of the ``label`` model on the evaluation samples."""
    return f"coverage_residuals-{label}.npz"


def probe_file(target: str, label: str) -> str:
    """The probes stage's fitted probe of ``target`` ("reward", "ratings") on the ``label`` model."""
    return f"probe-{target}-{label}.npz"
