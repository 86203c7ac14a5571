"""The package's layers, checked on its import graph (docs/architecture.md).

Every module of ``ttame/`` is read with ``ast`` (nothing is imported) and mapped to a layer. A
module imports only from lower layers, or from its own layer's earlier groups; groups marked as
siblings (methods | metrics | data, ...) never import each other. Imports at module level form
no circle. Imports inside functions are only for optional heavy dependencies, so that the core
installs lean and ``ttame explain`` starts without them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ttame"

LAYERS: list[tuple[str, list[str], bool]] = [
    # (name, groups in order, whether the groups are siblings that never import each other)
    ("L0 errors", ["ttame.errors", "ttame._files"], False),
    (
        "L1 pictures",
        ["ttame.images", "ttame.explanation", "ttame.distributed", "ttame.hub.client"],
        False,
    ),
    ("L2 model", ["ttame.model"], False),
    ("L3 hub", ["ttame.hub"], False),
    ("L4 explainer", ["ttame.explainer"], False),
    (
        "L5 methods | metrics | data | video | batch | export",
        [
            "ttame.methods",
            "ttame.metrics",
            "ttame.data",
            "ttame.video",
            "ttame.batch",
            "ttame.export",
        ],
        True,
    ),
    ("L6 evaluation | training", ["ttame.evaluation", "ttame.training"], True),
    ("L7 app | cli", ["ttame.app", "ttame.cli"], True),
    ("L8 the package", ["ttame.__main__", "ttame"], False),
]
EXACT = {"ttame": 8, "ttame.hub": 1}
"""Modules placed by name: the package itself on top; ``ttame.hub``'s own module, which every
import of ``ttame.hub.client`` runs, in the client's layer (it imports nothing)."""

OPTIONAL = {
    "gradio",
    "pytorch_grad_cam",
    "numba",
    "timm",
    "onnxruntime",
    "matplotlib",
    "cv2",
    "av",
    "scipy",  # the sanity check's rank correlation
    "efficientnet_lite_pytorch",  # an offline-weights package installed with --no-deps
}
"""Optional heavy dependencies: the only imports allowed inside functions."""
OPTIONAL_MODULES = {"ttame.metrics.road.cpu_solver": "numba"}
"""Our modules that import an optional dependency at their top: importable inside functions."""
ONLY_ERRORS = {"ttame.model.head"}
"""Modules that may import nothing of ttame but its errors."""
MAX_LINES = 450
"""No module much over 400 lines: a longer one is usually two jobs."""


@dataclass(frozen=True)
class Import:
    """One import statement's target inside ttame, or an outside top-level package."""

    source: str
    target: str
    line: int
    top_level: bool
    internal: bool


def module_name(path: Path) -> str:
    """``ttame/a/b.py`` -> ``ttame.a.b``; ``ttame/a/__init__.py`` -> ``ttame.a``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(source: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules (ours, dotted) or outside packages (top-level name) a statement imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = source if MODULES[source].name == "__init__.py" else source.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}".rstrip(".")
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def imports(source: str) -> list[Import]:
    """Every import statement of a module, with whether it runs when the module is imported."""
    tree = ast.parse(MODULES[source].read_text(), str(MODULES[source]))
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in resolve(source, node):
                internal = target == "ttame" or target.startswith("ttame.")
                name = target if internal else target.split(".")[0]
                found.append(Import(source, name, node.lineno, id(node) not in inside, internal))
    return found


ALL = [i for module in MODULES for i in imports(module) if i.target != "__future__"]


def place(module: str) -> tuple[int, int, str]:
    """(layer, position of its group in the layer, group) of one of our modules."""
    if module in EXACT:
        return EXACT[module], 0, module
    best: tuple[int, int, str] | None = None
    for layer, (_, groups, _) in enumerate(LAYERS):
        for position, group in enumerate(groups):
            matches = module == group or module.startswith(group + ".")
            if matches and group != "ttame" and (best is None or len(group) > len(best[2])):
                best = (layer, position, group)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        place(module)


def test_imports_go_down_the_layers():
    wrong = []
    for edge in ALL:
        if not edge.internal:
            continue
        layer, position, group = place(edge.source)
        other_layer, other_position, other_group = place(edge.target)
        where = f"{edge.source}:{edge.line} imports {edge.target}"
        if other_layer > layer:
            wrong.append(f"{where}, of an upper layer ({LAYERS[other_layer][0]})")
        elif other_layer == layer and other_group != group:
            if LAYERS[layer][2]:
                wrong.append(f"{where}, its sibling in {LAYERS[layer][0]}")
            elif other_position > position:
                wrong.append(f"{where}, a later group of {LAYERS[layer][0]}")
        if edge.source in ONLY_ERRORS and edge.target != "ttame.errors":
            wrong.append(f"{where}: it may import only ttame.errors")
    assert wrong == []


def test_no_import_circle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for edge in ALL:
        if edge.internal and edge.top_level and edge.target in graph:
            graph[edge.source].add(edge.target)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circle = [*path[path.index(target) :], target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_imports_inside_functions_are_optional_dependencies_only():
    wrong = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in ALL
        if not i.top_level and i.target not in OPTIONAL and i.target not in OPTIONAL_MODULES
    ]
    assert wrong == []


def test_optional_modules_really_need_their_dependency():
    for module, dependency in OPTIONAL_MODULES.items():
        assert any(i.top_level and i.target == dependency for i in imports(module)), module


def test_modules_stay_small():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}, "split them by job"
