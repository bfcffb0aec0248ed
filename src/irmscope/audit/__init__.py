"""The blind audit (``irmscope audit``): what did tuning reward, for an auditor with no lexicon.

* :mod:`.shift` — every single-token word's implicit reward (relative shift, expected-count shift, mean
  log-ratio) from one forward pass per model, with bootstrap intervals and a noise floor against the drift
  all words share (an empirical null) under false-discovery-rate control;
* :mod:`.completions` — where the change in the sampled completions comes from, and reward-hacking signs;
* :mod:`.compare` — with a known lexicon reward, how far the elicited values are from it, beside the base
  model's own level and a shuffled-values control (:func:`compare_table` compares an earlier audit's
  ``words.csv``, read by :func:`read_table`, again);
* :mod:`.run` — :func:`audit` on loaded models, :func:`run_audit` from model names to the output folder
  (the pipeline's ``audit`` stage calls :func:`audit` and :func:`write_audit` on a run's models).
"""

from irmscope.audit.compare import compare_table
from irmscope.audit.run import EXPORT_RANGE, audit, elicited_lexicon, read_table, run_audit, write_audit
from irmscope.audit.shift import FDR_Q, noise_floor, relative_shift, unit_shifts, vocabulary_words

__all__ = [
    "EXPORT_RANGE",
    "FDR_Q",
    "audit",
    "compare_table",
    "elicited_lexicon",
    "noise_floor",
    "read_table",
    "relative_shift",
    "run_audit",
    "unit_shifts",
    "vocabulary_words",
    "write_audit",
]
