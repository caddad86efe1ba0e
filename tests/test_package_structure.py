"""The package's structure: no import circle among wildrayzer's modules, inference independent of training, and the
README's "Package layout" section naming exactly the modules that exist (so it cannot drift)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "wildrayzer"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """wildrayzer modules that ``name`` imports anywhere in its file (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:  # a name imported from a module -> that module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def _parents(name: str) -> set[str]:
    """Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first: a package may not import its own modules'
    importers, so the edge to each parent package counts too (``wildrayzer`` itself is lazy: left out)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}


def test_no_import_circle_among_the_packages_modules():
    graph = _graph()
    assert len(graph) > 50 and "wildrayzer.weights" in graph and "wildrayzer.pseudolabel.cli" in graph
    full = {n: deps | {p for d in deps for p in _parents(d) if p != n and not n.startswith(p + ".")}
            for n, deps in graph.items()}
    assert _cycle(full) is None, " -> ".join(_cycle(full))


def test_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_inference_api_demo_and_converter_import_nothing_from_training():
    graph = _graph()
    users = [n for n in graph if n.startswith(("wildrayzer.infer", "wildrayzer.official"))
             or n in ("wildrayzer.api", "wildrayzer.commands.demo", "wildrayzer.weights", "wildrayzer.model")]
    assert "wildrayzer.infer.pipeline" in users and "wildrayzer.official.convert" in users
    bad = {n: sorted(d for d in graph[n] if d.startswith("wildrayzer.train")) for n in users}
    assert not {n: d for n, d in bad.items() if d}
    # the test sees a violation when there is one
    assert "wildrayzer.weights" in graph["wildrayzer.train.checkpoint"]


def _readme_layout() -> dict[str, set[str]]:
    """{folder ('' = wildrayzer/ itself, else 'data', ...): module file names} from README's Package layout block."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Package layout", 1)[1]
    block = section.split("```", 2)[1]
    named: dict[str, set[str]] = {}
    folder = ""
    for line in block.splitlines():
        if not line.startswith("  "):
            continue
        if not line.startswith("   "):  # a new entry: a folder, or a top-level module
            first = line.split()[0]
            folder = first[:-1] if first.endswith("/") else ""
            named.setdefault(folder, set())
        named[folder].update(re.findall(r"\b(\w+\.py)\b", line))
    return named


def _tree() -> dict[str, set[str]]:
    tree = {"": {p.name for p in PKG.glob("*.py") if not p.name.startswith("__")}}
    for d in PKG.iterdir():
        if d.is_dir() and (d / "__init__.py").exists():
            tree[d.name] = {p.name for p in d.glob("*.py") if not p.name.startswith("__")}
    return tree


def test_readme_package_layout_names_exactly_the_modules_that_exist():
    named, tree = _readme_layout(), _tree()
    assert "weights.py" in named[""] and "constructor.py" in named["pseudolabel"]
    assert set(named) == set(tree), f"folders: README {sorted(named)} vs tree {sorted(tree)}"
    for folder, files in tree.items():
        where = f"wildrayzer/{folder + '/' if folder else ''}"
        assert not files - named[folder], f"README's layout does not name {sorted(files - named[folder])} in {where}"
        assert not named[folder] - files, f"README's layout names {sorted(named[folder] - files)}, not in {where}"
