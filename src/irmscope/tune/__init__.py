"""Making and evaluating subjects: sampling completions from a policy (fine-tuning lands here too)."""

from irmscope.tune.sampling import generate_completions

__all__ = ["generate_completions"]
