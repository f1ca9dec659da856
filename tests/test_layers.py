"""The house's layers point one way: harness <- libraries (im2win, supersam_min) <- reproductions
and the suites in bench/; no import circle anywhere, lazy (in-function) imports included."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "im2win", "supersam_min", "reproductions", "bench")
# what each package may import from the project, besides itself
ALLOWED = {
    "harness": set(),
    "im2win": {"harness"},
    "supersam_min": {"harness"},
    "reproductions": {"harness", "im2win", "supersam_min"},
    "bench": {"harness", "im2win", "supersam_min"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lands in (its longest known prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".strip(".")
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for n in names if (target := _resolve(n)) and target != module}
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_from_lower_layers(module):
    own = module.split(".")[0]
    wrong = {t for t in GRAPH[module] if t.split(".")[0] not in ALLOWED[own] | {own}}
    assert not wrong, f"{module} imports {sorted(wrong)}, above or beside its layer"


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_no_module_over_450_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"modules over 450 lines: {long}"
