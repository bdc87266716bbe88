"""tood_lib's modules import each other in one direction: no module needs, directly or through others,
a module that needs it. A circle forces imports into function bodies and makes the files impossible to
read in order (the README's reading order: backbone → FPN → head → assigner → losses)."""
import ast
from pathlib import Path

import tood_lib

PACKAGE = Path(tood_lib.__file__).parent


def module_names() -> dict[str, Path]:
    """{dotted name: file} of every module of tood_lib (a package is named by its __init__)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """{module: modules of tood_lib it imports anywhere in its body, top level or inside a function}.
    ``from tood_lib.x import y`` counts as importing ``tood_lib.x.y`` when that is a module, else ``tood_lib.x``.
    Package ``__init__`` files are left out: importing a submodule runs them, but they import nothing here."""
    names = module_names()

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in names:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph = {}
    for name, path in names.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tood_lib"):
                targets |= {resolve(f"{node.module}.{alias.name}") for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names if alias.name.startswith("tood_lib")}
        graph[name] = {t for t in targets if t and t != name and names[t].name != "__init__.py"}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle [a, b, ..., a] of ``graph``, or None (depth-first search for a back edge)."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_the_circle_finder_finds_a_circle():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "tood_lib.model.detector" in graph["tood_lib.engine.trainer"]
    assert "tood_lib.engine.pretrain" in graph["tood_lib.model.detector"]  # imported inside a method


def test_no_import_circles_in_tood_lib():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)
