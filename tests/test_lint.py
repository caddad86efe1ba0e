"""`make test` lints the tree with the project's ruff settings (pyproject.toml), the paths `make lint` checks plus
tools/: a too-long line or an unsorted import fails the suite, not only a manual `make lint`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATHS = ["wildrayzer", "tests", "benchmarks", "tools", "train.py", "inference.py"]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff not installed (dev extra)")


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_the_tree_passes_ruff():
    run = _ruff(*PATHS)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_ruff_uses_the_projects_rules(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nx = '" + "a" * 130 + "'\nprint(os, sys)\n")
    run = _ruff("--config", str(REPO / "pyproject.toml"), str(bad))
    assert run.returncode == 1 and "E501" in run.stdout and "I001" in run.stdout, run.stdout
