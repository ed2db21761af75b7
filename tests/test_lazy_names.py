"""Names the packages import on first use (``bdekit._lazy``): every listed name resolves to
its submodule's object, unknown names are AttributeError, and importing a package loads none
of the listed submodules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

_PACKAGES = {"bdekit": ("BdeVolume", "bdekit.volume.bde"),
             "bdekit.batch": ("run_batch", "bdekit.batch.runner"),
             "bdekit.report": ("render", "bdekit.report.html")}


@pytest.mark.parametrize("package", sorted(_PACKAGES))
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    name, source = _PACKAGES[package]
    assert getattr(module, name) is getattr(importlib.import_module(source), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


@pytest.mark.parametrize("package", sorted(_PACKAGES))
def test_importing_the_package_loads_no_listed_submodule(package: str) -> None:
    name, source = _PACKAGES[package]
    code = (f"import sys, {package}\nprint({source!r} in sys.modules)\n"
            f"{package}.{name}\nprint({source!r} in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]
