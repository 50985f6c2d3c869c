"""`make lint-layout`: the import floors of pyproject.toml and the module length limit hold on
this tree, and fail on an upward import or an overlong module (run on a copy of the package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def lint_layout(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-s", "lint-layout", f"BIN={BIN}"], cwd=tree,
                          capture_output=True, text=True, env={"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": str(tree)})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package with the Makefile and the contract, importable from its own folder."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "alframe", tmp_path / "alframe", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_this_tree_keeps_its_floors(tree: Path):
    out = lint_layout(tree)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Floors: imports only go down KEPT" in out.stdout
    assert "Strategies read only the outputs contract KEPT" in out.stdout


@pytest.mark.parametrize("module, line, broken", [
    # a floor importing one above it
    ("alframe/rundir/state.py", "from alframe.loop import experiment  # noqa", "Floors: imports only go down BROKEN"),
    ("alframe/errors.py", "import alframe.config.schema  # noqa", "Floors: imports only go down BROKEN"),
    # a strategy reaching past the outputs contract
    ("alframe/strategies/uncertainty.py", "from alframe.scoring import pool  # noqa",
     "Strategies read only the outputs contract BROKEN"),
])
def test_an_upward_import_fails(tree: Path, module: str, line: str, broken: str):
    path = tree / module
    path.write_text(path.read_text() + "\n" + line + "\n")
    out = lint_layout(tree)
    assert out.returncode != 0
    assert broken in out.stdout


def test_an_overlong_module_fails(tree: Path):
    (tree / "alframe" / "metrics_long.py").write_text("x = 1\n" * 451)
    out = lint_layout(tree)
    assert out.returncode != 0
    assert "module too long: alframe/metrics_long.py has 451 lines (at most 450)" in out.stdout
