"""A sentiment-classifier reward: the paper's Appendix F variant, with a small scikit-learn classifier.

Appendix F replaces the lexicon reward with "a DistilBERT sentiment classifier trained on the IMDb reviews
dataset" and says "reward is assigned to the logit of the positive sentiment label". We keep that rule with
a classifier that trains in seconds on a CPU: TF-IDF word unigrams+bigrams and a logistic regression. A
binary logistic regression has a single logit, ``w·x + b`` (scikit-learn's ``decision_function``): the
log-odds that the text is a positive review. That is the reward, unbounded and 0 at the decision boundary.

The trained classifier is stored without pickle (which executes code on load): the vocabulary and settings go
to ``classifier.json`` and the arrays (idf weights, coefficients, intercept) to ``classifier.safetensors``.
Scores are always computed from those arrays, by the same code, before and after a save, so a loaded
classifier reproduces the original's scores exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.errors import IrmscopeError
from irmscope.io import atomic_write, write_json
from irmscope.paths import cache_dir
from irmscope.rewards.base import Reward, _check_texts

FORMAT = "irmscope.classifier_reward"
FORMAT_VERSION = 1
JSON_NAME = "classifier.json"
TENSORS_NAME = "classifier.safetensors"

# Vectorizer settings that affect transform(); they are stored and restored verbatim.
_VECTORIZER_KEYS = (
    "lowercase",
    "token_pattern",
    "ngram_range",
    "strip_accents",
    "binary",
    "norm",
    "use_idf",
    "smooth_idf",
    "sublinear_tf",
)


def default_classifier_dir() -> Path:
    """Where ``load_reward("classifier")`` looks for a trained classifier: ``<cache>/rewards/classifier``."""
    return cache_dir() / "rewards" / "classifier"


def _build_vectorizer(settings: dict[str, Any], vocabulary: list[str] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    kwargs = {k: settings[k] for k in _VECTORIZER_KEYS}
    kwargs["ngram_range"] = tuple(kwargs["ngram_range"])
    return TfidfVectorizer(analyzer="word", dtype=np.float64, vocabulary=vocabulary, **kwargs)


class ClassifierReward(Reward):
    """Reward = logit of the positive class of a TF-IDF + logistic-regression sentiment classifier.

    Build one with :meth:`train` (labelled texts, label 1 = positive) or :meth:`load`; store it with
    :meth:`save`.
    """

    def __init__(
        self,
        vectorizer_settings: dict[str, Any],
        vocabulary: Sequence[str],
        idf: np.ndarray,
        coef: np.ndarray,
        intercept: float,
        *,
        name: str = "classifier",
        description: str | None = None,
        training: dict[str, Any] | None = None,
    ) -> None:
        vocabulary = list(vocabulary)
        idf = np.ascontiguousarray(idf, dtype=np.float64).reshape(-1)
        coef = np.ascontiguousarray(coef, dtype=np.float64).reshape(-1)
        if not vocabulary or len(set(vocabulary)) != len(vocabulary):
            raise IrmscopeError(
                "classifier vocabulary is empty or has duplicate terms: retrain the classifier"
            )
        if idf.shape != (len(vocabulary),) or coef.shape != (len(vocabulary),):
            raise IrmscopeError(
                f"classifier arrays do not match its {len(vocabulary)}-term vocabulary "
                f"(idf {idf.shape}, coef {coef.shape}): retrain the classifier"
            )
        if not (np.isfinite(idf).all() and np.isfinite(coef).all() and math.isfinite(float(intercept))):
            raise IrmscopeError("classifier weights contain NaN or infinity: retrain the classifier")
        missing = [k for k in _VECTORIZER_KEYS if k not in vectorizer_settings]
        if missing:
            raise IrmscopeError(f"classifier settings lack {', '.join(missing)}: retrain the classifier")
        self.vectorizer_settings = {k: vectorizer_settings[k] for k in _VECTORIZER_KEYS}
        self.vectorizer_settings["ngram_range"] = list(self.vectorizer_settings["ngram_range"])
        self.vocabulary = vocabulary
        self.idf = idf
        self.coef = coef
        self.intercept = float(intercept)
        self.training = dict(training or {})
        try:
            self._vectorizer = _build_vectorizer(self.vectorizer_settings, vocabulary)
            self._vectorizer.idf_ = idf
            self._vectorizer.transform(["probe"])  # surfaces invalid stored settings now, not at scoring time
        except (ValueError, TypeError) as e:
            raise IrmscopeError(
                f"classifier settings are invalid ({str(e).splitlines()[0][:100]}): retrain the classifier"
            ) from None
        super().__init__(name, description or self._default_description())

    # -- training ----------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int | float = 2,
        max_df: float = 1.0,
        max_features: int | None = 100_000,
        sublinear_tf: bool = True,
        C: float = 4.0,
        max_iter: int = 1000,
        random_state: int = 0,
        name: str = "classifier",
        description: str | None = None,
    ) -> ClassifierReward:
        """Fit the classifier on labelled texts (label 1 = positive sentiment, 0 = negative), e.g. IMDb train.

        Defaults suit movie reviews: sublinear term frequencies, terms seen in at least 2 reviews, the 100k
        most frequent unigrams and bigrams, and mild L2 regularisation (C=4). Deterministic for fixed inputs.
        """
        from sklearn.linear_model import LogisticRegression

        texts = _check_texts(texts)
        labels_arr = _check_labels(labels, len(texts))
        settings = {
            "lowercase": True,
            "token_pattern": r"(?u)\b\w\w+\b",
            "ngram_range": list(ngram_range),
            "strip_accents": None,
            "binary": False,
            "norm": "l2",
            "use_idf": True,
            "smooth_idf": True,
            "sublinear_tf": bool(sublinear_tf),
        }
        vectorizer = _build_vectorizer(settings)
        vectorizer.set_params(min_df=min_df, max_df=max_df, max_features=max_features)
        try:
            features = vectorizer.fit_transform(texts)
        except ValueError as e:  # e.g. "empty vocabulary; perhaps the documents only contain stop words"
            raise IrmscopeError(
                f"cannot build the classifier's vocabulary ({str(e).splitlines()[0]}): "
                "give more (or longer) training texts, or lower min_df"
            ) from None
        model = LogisticRegression(C=C, max_iter=max_iter, random_state=random_state, solver="lbfgs")
        model.fit(features, labels_arr)
        train_accuracy = float((model.predict(features) == labels_arr).mean())
        vocabulary = vectorizer.get_feature_names_out().tolist()
        training = {
            "n_texts": len(texts),
            "n_positive": int(labels_arr.sum()),
            "train_accuracy": train_accuracy,
            "min_df": min_df,
            "max_df": max_df,
            "max_features": max_features,
            "C": C,
            "max_iter": max_iter,
            "random_state": random_state,
        }
        return cls(
            settings,
            vocabulary,
            vectorizer.idf_,
            model.coef_[0],
            float(model.intercept_[0]),
            name=name,
            description=description,
            training=training,
        )

    # -- scoring -----------------------------------------------------------------------------------------

    def _score(self, texts: list[str]) -> np.ndarray:
        return self.logits(texts)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """The positive-class logit ``w·tfidf(text) + b`` of each text (unvalidated; use :meth:`score`)."""
        features = self._vectorizer.transform(list(texts))
        return np.asarray(features @ self.coef, dtype=np.float64).reshape(-1) + self.intercept

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted labels (1 = positive), i.e. ``score > 0``."""
        return (self.score(texts) > 0).astype(np.int64)

    def accuracy(self, texts: Sequence[str], labels: Sequence[int]) -> float:
        """Fraction of ``texts`` whose predicted label equals ``labels``."""
        texts = _check_texts(texts)
        return float((self.predict(texts) == _check_labels(labels, len(texts), need_both=False)).mean())

    def top_terms(self, k: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """The ``k`` terms with the largest positive and the ``k`` with the most negative coefficients."""
        order = np.argsort(self.coef, kind="stable")
        positive = [(self.vocabulary[i], float(self.coef[i])) for i in order[::-1][:k] if self.coef[i] > 0]
        negative = [(self.vocabulary[i], float(self.coef[i])) for i in order[:k] if self.coef[i] < 0]
        return positive, negative

    def _default_description(self) -> str:
        positive, negative = self.top_terms(6)
        text = (
            "Logit (log-odds of the positive class) of a TF-IDF word unigram+bigram logistic-regression "
            "sentiment classifier trained on labelled movie reviews: text the classifier reads as a positive "
            "review is rewarded and text it reads as negative is penalised"
        )
        if positive:
            text += "; most rewarded terms: " + ", ".join(repr(t) for t, _ in positive)
        if negative:
            text += "; most penalised terms: " + ", ".join(repr(t) for t, _ in negative)
        return text

    # -- storage -----------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``classifier.safetensors`` then ``classifier.json`` into ``directory``, each atomically.

        The JSON records the SHA-256 of the tensors file, so :meth:`load` detects a mismatched or damaged
        pair.
        """
        from safetensors.numpy import save_file

        directory = Path(directory)
        tensors = {
            "idf": self.idf,
            "coef": self.coef,
            "intercept": np.array([self.intercept], dtype=np.float64),
        }
        tensors_path = atomic_write(directory / TENSORS_NAME, lambda tmp: save_file(tensors, str(tmp)))
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "reward": "logit of the positive class (decision_function of a binary logistic regression)",
            "tensors_sha256": _sha256(tensors_path),
            "vectorizer": self.vectorizer_settings,
            "training": self.training,
            "vocabulary": self.vocabulary,
        }
        write_json(directory / JSON_NAME, manifest)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ClassifierReward:
        """Rebuild a classifier written by :meth:`save`; its scores equal the saved one's exactly."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        directory = Path(directory)
        json_path, tensors_path = directory / JSON_NAME, directory / TENSORS_NAME
        if not directory.is_dir():
            raise IrmscopeError(
                f"classifier directory {directory} does not exist: train and save a classifier there"
            )
        for path in (json_path, tensors_path):
            if not path.is_file():
                raise IrmscopeError(
                    f"{path} is missing, so {directory} holds no saved classifier: "
                    "save one there with ClassifierReward.save"
                )
        corrupt = f"classifier in {directory} is corrupt or incomplete"
        try:
            manifest = json.loads(json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise IrmscopeError(
                f"{corrupt} ({JSON_NAME} is not valid JSON): retrain and save it again"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IrmscopeError(
                f"{json_path} is not an irmscope classifier: point to a directory written by save()"
            )
        if manifest.get("version") != FORMAT_VERSION:
            raise IrmscopeError(
                f"{json_path} has format version {manifest.get('version')!r}, this irmscope reads "
                f"{FORMAT_VERSION}: retrain and save the classifier with this version"
            )
        if manifest.get("tensors_sha256") != _sha256(tensors_path):
            raise IrmscopeError(
                f"{corrupt} ({TENSORS_NAME} does not match {JSON_NAME}): retrain and save it again"
            )
        try:
            tensors = load_file(str(tensors_path))
            idf, coef, intercept = tensors["idf"], tensors["coef"], tensors["intercept"]
            settings, vocabulary = manifest["vectorizer"], manifest["vocabulary"]
            if intercept.shape != (1,) or not isinstance(settings, dict) or not isinstance(vocabulary, list):
                raise ValueError("bad shapes or types")
        except (SafetensorError, KeyError, ValueError, TypeError):
            raise IrmscopeError(f"{corrupt}: retrain and save it again") from None
        return cls(
            settings,
            vocabulary,
            idf,
            coef,
            float(intercept[0]),
            name=manifest.get("name") or "classifier",
            description=manifest.get("description"),
            training=manifest.get("training"),
        )


def train_on_reviews(data: str, out: str | Path, limit: int | None = None) -> dict[str, Any]:
    """What ``irmscope train-classifier`` runs: the classifier trained on ``data``'s labelled train split
    (at most ``limit`` reviews) and saved to ``out``, with its accuracy on the test split beside it (NaN
    when that split has no labels): ``{"path", "accuracy", "n_test"}``."""
    from irmscope.data import load_reviews

    train = load_reviews(data, split="train", limit=limit)
    test = load_reviews(data, split="test", limit=limit)
    if "label" not in train:
        raise IrmscopeError(f"{data} has no 'label' column; the classifier needs 0/1 sentiment labels")
    clf = ClassifierReward.train(list(train["text"]), list(train["label"]))
    path = clf.save(out)
    accuracy = clf.accuracy(list(test["text"]), list(test["label"])) if "label" in test else float("nan")
    return {"path": path, "accuracy": accuracy, "n_test": len(test)}


def _check_labels(labels: Sequence[int], n: int, need_both: bool = True) -> np.ndarray:
    """Labels as an int array of 0/1 with one label per text (and, for training, both classes present)."""
    try:
        arr = np.asarray(list(labels), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise IrmscopeError(
            "classifier labels must be numbers 0 (negative) or 1 (positive): fix the labels"
        ) from None
    if arr.shape[0] != n:
        raise IrmscopeError(f"got {arr.shape[0]} labels for {n} texts: pass one label per text")
    if n == 0:
        raise IrmscopeError("no training texts were given: pass labelled reviews (e.g. IMDb train)")
    if not np.isin(arr, (0.0, 1.0)).all():
        bad = arr[~np.isin(arr, (0.0, 1.0))][0]
        raise IrmscopeError(f"classifier label {bad:g} is not 0 or 1: use 1 for positive and 0 for negative")
    arr = arr.astype(np.int64)
    if need_both and len(np.unique(arr)) < 2:
        raise IrmscopeError(
            f"all {n} training labels are {int(arr[0])}: "
            "the classifier needs both positive (1) and negative (0) texts"
        )
    return arr


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
