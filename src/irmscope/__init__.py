"""irmscope: elicit the implicit reward model of an RL-fine-tuned language model.

The public entry points live in the subpackages: :mod:`irmscope.models` (loading, hook sites),
:mod:`irmscope.rewards` (the known rewards), :mod:`irmscope.data` (prompts, triples, preference pairs) and
:mod:`irmscope.activations` (the on-disk activation cache).
"""

from irmscope.errors import IrmscopeError

__version__ = "0.1.0"
__all__ = ["IrmscopeError", "__version__"]
