"""The layers of ARCHITECTURE.md §2, checked on the source: imports point down and never form a circle.

The graph is read with `ast`, so every `import` counts wherever it stands (module level or inside a
function). Imports under `if TYPE_CHECKING:` never run: they count for the layers, not for circles.
`import a.b.c` is an edge to `a.b.c` only; the parent packages it also initialises are left out, so a
package's `__init__` re-exporting its submodules is a circle only when a submodule imports the
package back, which is exactly when importing it can fail.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "tasks", "flows", "api", "cli")
UNSHIPPED = ("tests", "benchmarks")  # not in the wheel: the packages must not need them
Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, typing_only: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node`, with whether it sits under `if TYPE_CHECKING:`."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, typing_only
    elif isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            yield from _imports(child, True)
        for child in node.orelse:
            yield from _imports(child, typing_only)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _imports(child, typing_only)


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules one import statement names (a `from X import Y` may name submodule X.Y)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:  # relative: resolved against the importer's package
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}


def build_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> tuple[Graph, Graph]:
    """(runtime edges, edges under TYPE_CHECKING) between the modules of `packages` under `root`.

    Edges to `tests`/`benchmarks` are kept too, so that the layer check sees them.
    """
    files = {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    known = set(files)
    runtime: Graph = {m: set() for m in files}
    typing: Graph = {m: set() for m in files}
    tops = set(packages) | set(UNSHIPPED)
    for importer, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, typing_only in _imports(tree):
            for target in _targets(node, importer, path.name == "__init__.py", known):
                if target.split(".")[0] in tops and target != importer:
                    (typing if typing_only else runtime)[importer].add(target)
    return runtime, typing


# core/'s subsystems (one package each) and the other subsystems each may import; every subsystem
# may import the kernel (core/'s top-level modules), and the kernel imports no subsystem. The table
# is docs/architecture.md's, and it must stay acyclic (checked below).
SUBSYSTEMS: dict[str, frozenset[str]] = {
    "registry": frozenset(),
    "bench": frozenset({"registry"}),
    "serving": frozenset({"registry"}),
    "repos": frozenset(),
    "jobs": frozenset(),
    "stack": frozenset({"jobs"}),
    "index": frozenset(),
}


def _layer(module: str) -> str:
    """`tasks.<stage>` for a stage module, `core.<subsystem>` for a subsystem's, else the top package."""
    parts = module.split(".")
    if len(parts) > 1 and (parts[0] == "tasks" or (parts[0] == "core" and parts[1] in SUBSYSTEMS)):
        return ".".join(parts[:2])
    return parts[0]


def _core_rule(src: str, dst: str) -> str | None:
    """The rule inside core/ that `src` importing `dst` breaks (both core layers), if any."""
    if src == dst or dst == "core":
        return None
    if src == "core":
        return "the kernel (core/*.py) imports no subsystem (core/<subsystem>/)"
    mine, theirs = src.split(".")[1], dst.split(".")[1]
    if theirs not in SUBSYSTEMS[mine]:
        allowed = ", ".join(f"core/{s}/" for s in sorted(SUBSYSTEMS[mine])) or "no other subsystem"
        return f"core/{mine}/ imports the kernel and {allowed} only"
    return None


def broken_rule(importer: str, imported: str) -> str | None:
    """The rule of ARCHITECTURE.md §2 that `importer` importing `imported` breaks, if any."""
    src, dst = _layer(importer), _layer(imported)
    top = dst.split(".")[0]  # core/ as a whole, kernel and subsystems, for the layers above it
    if dst in UNSHIPPED:
        return f"nothing shipped imports {dst}/ (it is not in the wheel)"
    if dst == "cli" and src != "cli":
        return "nothing imports cli/ (except cli/ itself)"
    if src.startswith("core") and top != "core":
        return "core/ imports only core/ (stdlib and libraries)"
    if src.startswith("core"):
        return _core_rule(src, dst)
    if src.startswith("tasks.") and top != "core" and dst != src:
        return "tasks/<stage>/ imports only core/ and its own stage"
    if src == "tasks" and top not in ("core", "tasks"):
        return "tasks/ imports only core/ and tasks/"
    if src == "flows" and top not in ("core", "flows", "tasks"):
        return "flows/ imports only tasks/ and core/"
    if src == "api" and top not in ("core", "api"):
        return "api/ imports only core/ and api/"
    return None


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
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
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def violations(runtime: Graph, typing: Graph | None = None) -> list[str]:
    """Every layering violation and every import circle, one line each naming importer and imported."""
    problems = []
    typing = typing or {}
    for importer in sorted(set(runtime) | set(typing)):
        for imported in sorted(runtime.get(importer, set()) | typing.get(importer, set())):
            rule = broken_rule(importer, imported)
            if rule:
                problems.append(f"{importer} → {imported}: layering: {rule}")
    for component in circles(runtime):
        members = set(component)
        cycle = " ↔ ".join(component)
        for importer in component:
            for imported in sorted(runtime.get(importer, set()) & members):
                problems.append(f"{importer} → {imported}: no import circles ({cycle})")
    return problems


def test_the_project_has_no_import_circles_and_its_layers_point_down() -> None:
    runtime, typing = build_graph(ROOT)
    assert len(runtime) > 50, "the graph misses the project's modules"
    problems = violations(runtime, typing)
    assert not problems, f"{len(problems)} import problems:\n" + "\n".join(problems)


def test_every_package_in_core_is_a_declared_subsystem_and_the_table_has_no_circle() -> None:
    packages = {p.parent.name for p in (ROOT / "core").glob("*/__init__.py")}
    assert packages == set(SUBSYSTEMS), "declare each core/ package in SUBSYSTEMS (and docs/architecture.md)"
    assert circles({s: set(deps) for s, deps in SUBSYSTEMS.items()}) == []


def test_the_subsystems_import_each_other_without_a_circle() -> None:
    runtime, _ = build_graph(ROOT)
    collapsed: Graph = {}
    for importer, imported in runtime.items():
        src = _layer(importer)
        if src.startswith("core."):
            collapsed.setdefault(src, set()).update(
                d for d in map(_layer, imported) if d.startswith("core.") and d != src
            )
    assert circles(collapsed) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"core.a": {"tasks.extract.run"}}, ["core.a → tasks.extract.run: layering: core/"]),
        ({"core.a": {"api.app"}}, ["core.a → api.app: layering: core/"]),
        (
            {"tasks.extract.run": {"tasks.validate.run", "core.a"}},
            ["tasks.extract.run → tasks.validate.run: layering: tasks/<stage>/"],
        ),
        ({"tasks.export.run": {"flows.finetune"}}, ["tasks.export.run → flows.finetune: layering: tasks/"]),
        ({"flows.finetune": {"api.app"}}, ["flows.finetune → api.app: layering: flows/"]),
        ({"api.routes.x": {"tasks.finetune.run"}}, ["api.routes.x → tasks.finetune.run: layering: api/"]),
        ({"api.app": {"flows.finetune"}}, ["api.app → flows.finetune: layering: api/"]),
        ({"flows.f": {"cli.main"}}, ["flows.f → cli.main: layering: nothing imports cli/"]),
        ({"core.a": {"tests.helpers.x"}}, ["core.a → tests.helpers.x: layering: nothing shipped"]),
        (
            {"core.a": {"core.b"}, "core.b": {"core.a"}},
            ["core.a → core.b: no import circles (core.a ↔ core.b)", "core.b → core.a: no import circles"],
        ),
        (
            {"cli.main": {"cli.models"}, "cli.models": {"cli.serving"}, "cli.serving": {"cli.main"}},
            ["cli.serving → cli.main: no import circles (cli.main ↔ cli.models ↔ cli.serving)"],
        ),
        (  # a package's __init__ re-exporting a submodule that imports the package back
            {"core.reg": {"core.reg.db"}, "core.reg.db": {"core.reg"}},
            ["core.reg.db → core.reg: no import circles"],
        ),
        ({"core.a": {"core.a"}}, ["core.a → core.a: no import circles"]),
        (
            {"core.budget": {"core.registry.registry"}},
            ["core.budget → core.registry.registry: layering: the kernel"],
        ),
        (
            {"core.registry.db": {"core.serving.hub"}},
            ["core.registry.db → core.serving.hub: layering: core/registry/"],
        ),
        ({"core.jobs.runs": {"api.app"}}, ["core.jobs.runs → api.app: layering: core/ imports only core/"]),
    ],
)
def test_the_checker_reports_a_bad_graph(graph: Graph, expected: list[str]) -> None:
    problems = violations(graph)
    for line in expected:
        assert any(p.startswith(line) for p in problems), f"{line!r} not in {problems}"


def test_the_checker_accepts_the_allowed_directions() -> None:
    graph: Graph = {
        "cli.main": {"api.app", "flows.finetune", "tasks.export.run", "core.settings", "cli.models"},
        "api.app": {"api.routes.health", "core.registry"},
        "flows.finetune": {"tasks.finetune.run", "tasks.export.run", "core.settings"},
        "tasks.finetune.run": {"tasks.finetune.trainer", "core.config"},
        "core.registry": {"core.registry.registry"},  # __init__ re-exporting: fine while nothing points back
        "core.registry.registry": {"core.registry.db", "core.settings"},
        "core.bench.store": {"core.registry.db", "core.errors"},
        "core.stack.supervisor": {"core.jobs.status", "core"},
    }
    assert violations(graph, {"core.a": {"core.b"}}) == []


def test_type_checking_imports_count_for_layers_but_not_for_circles() -> None:
    runtime = {"core.a": {"core.b"}}
    typing = {"core.b": {"core.a", "api.app"}}
    assert violations(runtime, typing) == [
        "core.b → api.app: layering: core/ imports only core/ (stdlib and libraries)"
    ]


def test_the_graph_sees_function_level_relative_and_submodule_imports(tmp_path: Path) -> None:
    files = {
        "core/__init__.py": "",
        "core/reg/__init__.py": "from .db import engine\n",
        "core/reg/db.py": "def engine():\n    from core import reg\n",
        "core/reg/snap.py": "import typing\nif typing.TYPE_CHECKING:\n    from tasks.x import y\n",
        "tasks/__init__.py": "",
        "tasks/x.py": "import json\nimport core.reg.db\nfrom core.reg import snap, engine\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    runtime, typing = build_graph(tmp_path, ("core", "tasks"))
    assert runtime["core.reg"] == {"core.reg.db"}
    assert runtime["core.reg.db"] == {"core.reg"}
    assert runtime["tasks.x"] == {"core.reg.db", "core.reg.snap", "core.reg"}
    assert typing["core.reg.snap"] == {"tasks.x"}
    assert [p.split(":")[0] for p in violations(runtime, typing)] == [
        "core.reg.snap → tasks.x",
        "core.reg → core.reg.db",
        "core.reg.db → core.reg",
    ]


def _canonical(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def test_only_forgeflow_provides_the_top_level_package_names() -> None:
    owners = importlib.metadata.packages_distributions()
    foreign = {
        name: dists
        for name in PACKAGES
        if (dists := sorted({d for d in owners.get(name, []) if _canonical(d) != "forgeflow"}))
    }
    assert not foreign, f"other installed distributions provide forgeflow's top-level packages: {foreign}"
