"""Leaderboard methods, one module each: every module here registers its estimators on import.

Adding a method means adding one module that calls :func:`irmscope.leaderboard.base.register`.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
