"""The shape of the code, checked like behaviour: layers, size limits, types, lint, README.

* Layer contract: ``lint-imports`` (import-linter, contract in pyproject.toml): every import
  goes downward through format < crypto < image < escrow < unlock < volume < ... < cli.
* No function over 80 lines and no module over 600 lines in ``src/``.
* ``mypy`` (configured in pyproject.toml) and ``ruff`` report nothing.
* README.md's "Layout of the code" names every module of ``src/bdekit``.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "bdekit"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


def test_layer_contract() -> None:
    tool = shutil.which("lint-imports")
    if tool is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = _run(tool, "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout or "broken" not in result.stdout


def test_mypy_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_is_clean() -> None:
    tool = shutil.which("ruff")
    if tool is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = _run(tool, "check", "src", "tests", "tools")
    assert result.returncode == 0, result.stdout[-4000:]


def test_no_module_over_600_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long


def test_no_function_over_80_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                # from ``def`` to the last line; decorators (click options) are declarations
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length})")
    assert not long


def _readme_layout() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Layout of the code\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no '## Layout of the code' section"
    return match.group(1)


def test_readme_layout_names_every_module() -> None:
    layout = _readme_layout()
    missing = []
    for path in _modules():
        rel = path.relative_to(SRC).as_posix()
        if rel.endswith("__init__.py"):
            rel = rel[: -len("__init__.py")]
            if not rel:
                continue
        if f"`{rel}`" not in layout:
            missing.append(rel)
    assert not missing, f"README 'Layout of the code' lacks: {', '.join(missing)}"


def test_the_readme_check_notices_a_new_module(tmp_path: Path) -> None:
    """The check above is not vacuous: a module it has never heard of is reported."""
    assert "`format/no_such_module.py`" not in _readme_layout()
    assert "`format/structs.py`" in _readme_layout()
