"""The rooms keep their doors: engines never import ``app``, each ``hotspots`` subpackage imports only the rooms
its docstring allows, and no module imports another module's ``_private`` name."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "geodata", "hotspots", "rtm", "bench", "tests")
# room -> the other hotspots rooms it may import (see hotspots/__init__.py)
HOTSPOT_ROOMS = {
    "ranking": set(),
    "stats": {"ranking"},
    "patrol": {"ranking", "stats"},
    "executors": {"ranking"},
    "publish": {"ranking"},
}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_engines_never_import_app():
    bad = [(str(p.relative_to(ROOT)), m) for p, tree in _modules() if p.parts[len(ROOT.parts)] in
           ("geodata", "hotspots", "rtm") for m, _ in _imports(tree) if m == "app" or m.startswith("app.")]
    assert not bad, bad


def test_hotspot_rooms_import_only_what_they_may():
    bad = []
    for path, tree in _modules():
        rel = path.relative_to(ROOT).parts
        if rel[0] != "hotspots" or len(rel) < 3:
            continue
        room = rel[1]
        for module, _ in _imports(tree):
            parts = module.split(".")
            if parts[0] == "hotspots" and len(parts) > 1 and parts[1] != room and parts[1] not in HOTSPOT_ROOMS[room]:
                bad.append((str(path.relative_to(ROOT)), module))
    assert not bad, bad


def test_no_module_imports_a_private_name():
    bad = [(str(p.relative_to(ROOT)), m, n) for p, tree in _modules() for m, names in _imports(tree)
           for n in names if n.startswith("_") and not n.startswith("__")
           and m.split(".")[0] in ("app", "geodata", "hotspots", "rtm", "bench", "tests")]
    assert not bad, bad


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _app_import_graph() -> dict[str, set[str]]:
    """app module -> the app modules it imports anywhere in its body (function-level imports count too: a
    circle deferred into a function is still a circle)."""
    paths = {_module_name(p): p for p in sorted((ROOT / "app").rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for module, names in _imports(tree):
            if module.split(".")[0] != "app":
                continue
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in paths]
            targets.update(subs or ([module] if module in paths else []))
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycle_in_app():
    """No circle of imports anywhere in app/ (the OGC door, stats and RTM routers once imported each other)."""
    graph = _app_import_graph()
    assert "app.collections" in graph["app.routes.ogc"]  # the graph sees imports at all
    assert not _cycles(graph), _cycles(graph)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_rtm_imports_only_geodata():
    bad = [(str(p.relative_to(ROOT)), m) for p, tree in _modules() if p.parts[len(ROOT.parts)] == "rtm"
           for m, _ in _imports(tree) if m.split(".")[0] in ("app", "hotspots")]
    assert not bad, bad


def test_architecture_page_names_real_modules():
    """docs/architecture.md stays true to the code: every module of the engines and every router appears in its
    picture, and every dotted module or file path the page names exists."""
    import re

    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", page))
    rooms = [ROOT / "geodata", ROOT / "rtm", ROOT / "app", ROOT / "app" / "routes",
             *[d for d in sorted((ROOT / "hotspots").iterdir()) if (d / "__init__.py").exists()]]
    missing = [str(p.relative_to(ROOT)) for room in rooms for p in sorted(room.glob("*.py"))
               if p.stem != "__init__" and p.stem not in words]
    missing += [str(d.relative_to(ROOT)) for d in rooms if d.name not in words]
    assert not missing, f"modules not in docs/architecture.md: {missing}"
    gone = []
    for name in re.findall(r"`((?:app|geodata|hotspots|rtm)(?:\.[a-z_]+)+)", page):
        parts = name.split(".")
        # a dotted name is a module path, possibly followed by an attribute
        if not any((ROOT.joinpath(*parts[:i]).with_suffix(".py")).exists() or (ROOT.joinpath(*parts[:i]) / "__init__.py").exists()
                   for i in range(len(parts), 1, -1)):
            gone.append(name)
    for path in re.findall(r"`((?:app|geodata|hotspots|rtm|bench|tests|docs)/[A-Za-z0-9_/.-]+)`", page):
        if not (ROOT / path).exists():
            gone.append(path)
    assert not gone, f"docs/architecture.md names what does not exist: {gone}"
