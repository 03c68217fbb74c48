"""The code base stays lint-clean and type-checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    if shutil.which(name, path=str(Path(sys.executable).parent)) is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return [sys.executable, "-m", name]


def test_ruff():
    out = subprocess.run([*_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy():
    out = subprocess.run([*_tool("mypy")], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_one_conftest():
    """Tests import helpers with `from conftest import ...`; a second conftest.py below
    tests/ outside a package takes that module name for the rest of the session."""
    nested = [p for p in (ROOT / "tests").rglob("conftest.py")
              if p.parent != ROOT / "tests" and not (p.parent / "__init__.py").exists()]
    assert nested == [], f"move these fixtures into a module listed in pytest_plugins: {nested}"
