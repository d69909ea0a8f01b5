"""The package's shape, checked: imports point one way (op -> layers -> integration -> io/data/evaluation ->
experiment -> command line), no import cycle (imports inside functions count), no library module imports the
command line, no module over 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "drconv_yolo"
MAX_LINES = 600

# layer of each module (by dotted-name prefix, longest match wins); a module may import its own layer or lower
LAYERS = {
    "drconv_yolo.errors": 0,
    "drconv_yolo.io": 0,
    "drconv_yolo.ops": 1,
    "drconv_yolo.modules": 2,
    "drconv_yolo.blocks": 2,
    "drconv_yolo.plugin": 3,
    "drconv_yolo._startup": 3,
    "drconv_yolo.diagnostics": 3,  # Ultralytics trainer callbacks, added by register()
    "drconv_yolo": 3,  # the package __init__: installs the start-up hook
    "drconv_yolo.data": 4,
    "drconv_yolo.evaluation": 4,
    "drconv_yolo.regions": 4,
    "drconv_yolo.measure": 4,
    "drconv_yolo.deploy": 4,  # exported models timed in deployment runtimes (the benchmark and the comparison)
    "drconv_yolo.bench": 5,
    "drconv_yolo.experiment": 5,
    "drconv_yolo.cli": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS[best]


def imports(path: Path) -> set[str]:
    """Every drconv_yolo module ``path`` imports, at the top or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("drconv_yolo")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("drconv_yolo"):
                submodules = {f"{target}.{a.name}" for a in node.names if _exists(f"{target}.{a.name}")}
                found |= submodules
                if len(submodules) < len(node.names):  # names defined by the package itself, not submodules
                    found.add(target)
    return {m for m in found if _exists(m) and m != name}


def _exists(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_imports_point_down_the_layers(graph):
    upward = [(a, b) for a, deps in graph.items() for b in deps if layer(b) > layer(a)]
    assert upward == []


def test_no_import_cycle(graph):
    def visit(node, stack, done):
        if node in stack:
            return stack[stack.index(node) :] + [node]
        if node in done:
            return None
        done.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep == "drconv_yolo":  # the parent package runs first anyway; importing it is not a dependency
                continue
            cycle = visit(dep, stack + [node], done)
            if cycle:
                return cycle
        return None

    done: set[str] = set()
    for start in sorted(graph):
        assert visit(start, [], done) is None


def test_no_library_module_imports_the_command_line(graph):
    offenders = [a for a, deps in graph.items() if not a.startswith("drconv_yolo.cli") and any(
        d.startswith("drconv_yolo.cli") for d in deps)]  # fmt: skip
    assert offenders == []


def test_no_module_over_600_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert long == {}
