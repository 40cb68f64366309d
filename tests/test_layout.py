"""The package layout: every module small enough to read, and no import circle.

Imports inside functions count as much as those at the top: a lazy import that closes a circle
is still a circle, only hidden until the function runs.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "relnas"
MAX_LINES = 320  # the style guide's "about 300 lines", with a little slack, for every module


def imports() -> dict[str, set[str]]:
    """``{module: the relnas modules it imports}``, over module and function level imports."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "relnas" and len(parts) > 1 and parts[1] in modules:
                    found.add(parts[1])
        graph[path.stem] = found - {path.stem}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per import circle found by depth-first search (empty when there is none)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_module_is_too_long():
    long = {p.name: n for p in PACKAGE.glob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_imports_form_no_circle():
    assert not cycles(imports()), f"import circles: {cycles(imports())}"


def test_the_circle_finder_finds_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
