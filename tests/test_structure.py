"""The package's shape, checked on its source: imports go one way — down the layers, never in a
circle, lazy imports (inside functions) included —, no call passes more than six arguments by
position, and the command line holds only the command surface."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "asyncbench"

# The layers, lowest first: a module may import from its own layer or one below, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("asyncbench.version", "asyncbench.errors", "asyncbench.records", "asyncbench.rows", "asyncbench.histogram",
     "asyncbench.timeline", "asyncbench.redact", "asyncbench.signals", "asyncbench.options",
     "asyncbench.ratelimit", "asyncbench.resume",
     "asyncbench.limiters",
     "asyncbench.system"),
    ("asyncbench.metrics", "asyncbench.rates", "asyncbench.usl", "asyncbench.thresholds", "asyncbench.tls", "asyncbench.engines",
     "asyncbench.client", "asyncbench.server"),
    ("asyncbench.load",),
    ("asyncbench.results", "asyncbench.hlog", "asyncbench.report", "asyncbench.plots", "asyncbench.webreport", "asyncbench.compare"),
    ("asyncbench.session", "asyncbench.groups"),
    ("asyncbench.experiments",),
    ("asyncbench.tools",),
    ("asyncbench.cli", "asyncbench.__main__"),
)
# The package's own __init__ holds only its version (and a lazy re-export of the client).
ROOT = "asyncbench"
MAX_POSITIONAL = 6


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of `if TYPE_CHECKING:` blocks: annotations, not imports that run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _resolve(target: str) -> str | None:
    """The asyncbench module an import names (`from a.b import c` names a.b.c when that is a
    module, else a.b)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(name: str) -> set[str]:
    """Every asyncbench module `name` imports when it runs, wherever the import stands."""
    tree = TREES[name]
    skip = _type_checking_only(tree)
    is_package = MODULES[name].name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or node.lineno in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for target in targets:
            if target.split(".")[0] != ROOT:
                continue
            module = _resolve(target)
            if module is not None and module != name:
                out.add(module)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in layer):
            return i
    raise AssertionError(f"{name} is in no layer: add it to LAYERS")


def test_every_module_has_a_layer():
    for name in MODULES:
        if name != ROOT:
            _layer(name)


def test_no_module_imports_one_above_it():
    upward = [f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
              for name, deps in GRAPH.items() if name != ROOT for dep in sorted(deps)
              if dep != ROOT and _layer(dep) > _layer(name)]
    assert not upward, "\n".join(upward)


def test_no_module_imports_in_a_circle():
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_lazy_imports_and_cycles():
    # The walk finds an import inside a function, and the cycle search finds a circle.
    assert "asyncbench.load.closed" in GRAPH["asyncbench.load.work"]
    assert "asyncbench.load.driver" not in GRAPH["asyncbench.load.work"]  # only under TYPE_CHECKING there
    saved = dict(GRAPH)
    try:
        GRAPH["asyncbench.errors"] = {"asyncbench.cli"}
        with pytest.raises(AssertionError, match="import cycles"):
            test_no_module_imports_in_a_circle()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def test_no_call_passes_more_than_six_arguments_by_position():
    crowded = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                positional = [a for a in node.args if not isinstance(a, ast.Starred)]
                if len(positional) > MAX_POSITIONAL:
                    crowded.append(f"{MODULES[name].relative_to(PACKAGE.parent)}:{node.lineno} "
                                   f"{ast.unparse(node.func)}(… {len(positional)} positional)")
    assert not crowded, "\n".join(crowded)


def test_the_command_line_holds_only_the_command_surface():
    tree = TREES["asyncbench.cli"]
    # It validates nothing itself (the groups and the experiments do) and builds no run.
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for validator in ("check_range", "parse_int_list", "parse_headers", "parse_data", "ServerConfig", "RequestSpec",
                      "make_driver", "session"):
        assert validator not in names, f"cli.py uses {validator}"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and any(
        isinstance(d, ast.Name) and d.id == "dataclass" for d in n.decorator_list)], "cli.py declares option groups"
    # Each experiment's command comes from its own module, through the registry.
    assert "asyncbench.experiments" in GRAPH["asyncbench.cli"]
    assert not [m for m in GRAPH["asyncbench.cli"] if m.startswith("asyncbench.experiments.")]
