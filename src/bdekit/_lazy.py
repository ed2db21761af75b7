"""Names a package imports on first use (PEP 562 module ``__getattr__``).

A package's ``__init__`` lists which submodule each public name lives in, and
:func:`lazy_getattr` builds the ``__getattr__`` that imports that submodule the first time the
name is asked for and keeps the value in the package's namespace (so it is looked up only
once). Importing the package, or one of its submodules, then loads nothing else: the command
line's start-up stays short.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, table: dict[str, str],
                 namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: ``table`` maps a name to the submodule (relative to
    ``package``, e.g. ``"volume.bde"``) that defines it; ``namespace`` is the package's
    ``globals()``."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__
