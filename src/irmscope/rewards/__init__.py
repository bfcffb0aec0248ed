"""The known rewards irmscope compares a model's implicit reward against.

* :class:`VaderReward` — the paper's fine-tuning reward (Eq. 3): VADER lexicon values of the spaCy tokens,
  summed, divided by 5, clipped to [-10, 10].
* :class:`LexiconReward` over any :class:`Lexicon` (e.g. a user's TSV word list).
* :class:`ClassifierReward` — Appendix F's variant: the positive-class logit of a sentiment classifier.
* :class:`NoiseReward` — a random value per text: the null control (tuning against it installs nothing).
* :class:`ReadoutReward` — a linear read-out of a frozen model's residual stream (an inverse-RL export).
* :class:`CallableReward` — any Python function from texts to floats.

:func:`load_reward` turns the spec strings used by the command line and config files into rewards.
"""

from __future__ import annotations

from pathlib import Path

from irmscope.errors import IrmscopeError
from irmscope.rewards.base import CallableReward, Reward
from irmscope.rewards.classifier import ClassifierReward, default_classifier_dir
from irmscope.rewards.lexicon import Lexicon, LexiconReward, VaderReward
from irmscope.rewards.noise import NoiseReward
from irmscope.rewards.readout import ReadoutReward

__all__ = [
    "Reward",
    "CallableReward",
    "Lexicon",
    "LexiconReward",
    "VaderReward",
    "ClassifierReward",
    "NoiseReward",
    "ReadoutReward",
    "default_classifier_dir",
    "load_reward",
    "REWARD_SPECS",
]

REWARD_SPECS = ("vader", "lexicon:PATH.tsv", "classifier:DIR", "classifier", "noise:SEED", "readout:DIR")


def load_reward(spec: str) -> Reward:
    """Resolve a reward spec string.

    * ``"vader"`` — :class:`VaderReward` (Eq. 3).
    * ``"lexicon:PATH"`` — :class:`LexiconReward` over the TSV lexicon at PATH (``word<TAB>value`` lines),
      with the same scale (5) and clip (10) as Eq. 3; named after the file's stem.
    * ``"classifier:DIR"`` — a :class:`ClassifierReward` saved in DIR; bare ``"classifier"`` loads the one
      in :func:`default_classifier_dir`.
    * ``"noise"`` / ``"noise:SEED"`` — :class:`NoiseReward`, a random value per text (the null control).
    * ``"readout:DIR"`` — a :class:`ReadoutReward` saved in DIR (e.g. the inverse-RL reward a run exported).
    """
    valid = ", ".join(repr(s) for s in REWARD_SPECS)
    if not isinstance(spec, str) or not spec.strip():
        raise IrmscopeError(f"reward spec {spec!r} is empty: use one of {valid}")
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind == "vader" and not sep:
        return VaderReward()
    if kind == "lexicon" and arg:
        path = Path(arg).expanduser()
        return LexiconReward(Lexicon.from_tsv(path), name=path.stem or "lexicon")
    if kind == "classifier":
        if sep and not arg:
            raise IrmscopeError(f"reward spec {spec!r} names no directory: use 'classifier:DIR'")
        return ClassifierReward.load(Path(arg).expanduser() if arg else default_classifier_dir())
    if kind == "noise":
        if not sep:
            return NoiseReward()
        if not arg.isdigit():
            raise IrmscopeError(f"reward spec {spec!r} needs a whole-number seed: use e.g. 'noise:1'")
        return NoiseReward(int(arg))
    if kind == "readout" and arg:
        return ReadoutReward.load(Path(arg).expanduser())
    raise IrmscopeError(f"unknown reward spec {spec!r}: use one of {valid}")
