"""The shape of the code: the head-search library stands apart, and imports flow one way."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cml"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every cml module `path` imports when it runs, at the top or inside a function (imports for
    type checkers only, under `if TYPE_CHECKING:`, are not)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cml"):
            for alias in node.names:  # `from cml import losses` imports the module cml.losses
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cml"))
    return found


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", [m for m in GRAPH if m.startswith("cml.nas")])
def test_the_nas_library_imports_nothing_of_the_program_but_its_errors(module):
    outside = {m for m in GRAPH[module] if not m.startswith("cml.nas") and m != "cml.errors"}
    assert not outside, f"{module} imports {sorted(outside)}"


def test_imports_flow_one_way():
    """No cycle among cml's modules: none imports, even lazily, a module that imports it back."""

    def owner(name: str) -> str:  # `from cml.data import x` imports the package cml.data
        return name if name in GRAPH else name.rsplit(".", 1)[0]

    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(owner(d) for d in GRAPH[module]):
            if dep == module or dep not in GRAPH:
                continue
            assert state.get(dep) != "open", "import cycle: " + " -> ".join([*path, module, dep])
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [])


# The project's layers, bottom first, following the data flow (README, "Code layout"): a module
# imports from its own layer or below it, never from a layer above.
LAYERS = [
    ("base", {"cml.errors", "cml.files", "cml.timing", "cml.device"}),
    ("head-search library", {"cml.nas"}),
    ("config", {"cml.config"}),
    ("dataset", {"cml.data"}),
    ("tasks and relation space", {"cml.tasks", "cml.relations"}),
    ("encoding", {"cml.cache", "cml.tokens", "cml.encoder", "cml.frozen"}),
    ("experiment", {"cml.experiment"}),
    (
        "learner",
        {
            "cml.model",
            "cml.losses",
            "cml.memory",
            "cml.curriculum",
            "cml.meta",
            "cml.prototypes",
            "cml.augment",
            "cml.plugins",
            "cml.stages",
            "cml.methods",
            "cml.engine",
        },
    ),
    ("metrics", {"cml.metrics", "cml.summary"}),
    ("report", {"cml.report"}),
    (
        "running",
        {"cml.trackers", "cml.cells", "cml.estimate", "cml.executors", "cml.runner", "cml.merge", "cml.head_search"},
    ),
    ("command line", {"cml.cli"}),
    ("Python API, the package", {"cml.api", "cml"}),
]


def layer(module: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if module in members or module.rsplit(".", 1)[0] in members - {"cml"}:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_from_a_layer_above_its_own(module):
    upward = [
        f"{dep} ({LAYERS[layer(dep)][0]})"
        for dep in sorted(GRAPH[module])
        if dep != "cml" and layer(dep) > layer(module)
    ]
    assert not upward, f"{module} ({LAYERS[layer(module)][0]}) imports {upward}"
