"""The decision table of ``make mutate`` (tools/method_decisions.py) cannot rot: every flip's snippet occurs exactly
once in the current tree, every named test exists, and docs/METHOD_DECISIONS.md is the table's rendering."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import REPO


def _mutate():
    spec = importlib.util.spec_from_file_location("wildrayzer_mutate", REPO / "tools" / "mutate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_every_flip_applies_exactly_once_and_names_existing_tests():
    m = _mutate()
    assert m.check_table() == []
    assert len(m.DECISIONS) >= 25 and len({f.area for f in m.DECISIONS}) >= 8
    assert all(f.tests and f.what and f.why for f in m.DECISIONS)
    assert {f.id for f in m.DECISIONS}.isdisjoint({f.id for f in m.CONTROLS})


def test_docs_are_the_rendered_table():
    m = _mutate()
    assert (REPO / "docs" / "METHOD_DECISIONS.md").read_text() == m.render_docs(), \
        "docs/METHOD_DECISIONS.md is out of date: run python tools/mutate.py --write-docs"


def test_check_table_catches_a_stale_snippet(tmp_path):
    m = _mutate()
    flip = m.Flip("x", "area", "f.py", "a = 1", "a = 2", ("tests/t.py::test_a",))
    (tmp_path / "f.py").write_text("a = 1\na = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("def test_b():\n    pass\n")
    problems = m.check_table(tmp_path, [flip])
    assert any("occurs 2 times" in p for p in problems) and any("does not exist" in p for p in problems)


def test_mutate_is_not_part_of_make_test():
    makefile = (REPO / "Makefile").read_text()
    assert "\nmutate: install" in makefile
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "mutate" not in test_recipe
    assert "mutate" not in (REPO / ".ci" / "run").read_text()


def test_runner_check_mode_exits_zero():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "mutate.py"), "--check"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
