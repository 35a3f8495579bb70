"""The layout keeps its shape: no import cycle between tandem's packages or modules (lazy imports included)."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import tandem

ROOT = Path(tandem.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST) -> set[str]:
    """Every `tandem...` module imported anywhere in the file (inside functions too), except under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tandem"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tandem"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(level: int | None) -> dict[str, set[str]]:
    """Edges between modules (level None) or packages (`tandem.X` for level 2)."""
    cut = (lambda name: ".".join(name.split(".")[:level])) if level else (lambda name: name)
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        source = cut(_module(path))
        for target in map(cut, _imports(ast.parse(path.read_text(encoding="utf-8")))):
            if target != source and target != "tandem":
                graph[source].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_packages():
    assert cycles(import_graph(level=2)) == []


def test_no_import_cycle_between_modules():
    assert cycles(import_graph(level=None)) == []


def test_the_bottom_layer_imports_nothing_from_tandem():
    for name in ("files.py", "specs.py", "registry.py", "presets.py", "plotting.py"):
        assert not _imports(ast.parse((ROOT / name).read_text())), name


def test_the_import_linter_contracts_hold():
    """The layers and the no-cycle contract of pyproject.toml's [tool.importlinter], as `lint-imports` checks them
    (its report, with any broken import chain, is this test's output)."""
    pytest.importorskip("importlinter")
    from importlinter.application.use_cases import lint_imports
    from importlinter.configuration import configure

    pyproject = ROOT.parent.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("tandem is installed without its source tree")
    configure()  # what the `lint-imports` command does first
    assert lint_imports(config_filename=str(pyproject), cache_dir=None, no_logo=True) is True
