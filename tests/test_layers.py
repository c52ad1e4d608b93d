"""The package's layers (docs/architecture.md): each module imports only from its own layer or lower ones."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gsplat_py"

# Lowest first. A module belongs to the first layer one of whose prefixes it starts with.
LAYERS = [
    ("rendering", ("gsplat_py.rendering", "gsplat_py._C", "gsplat_py._version", "gsplat_py.errors")),
    ("model", ("gsplat_py.model",)),
    ("io", ("gsplat_py.io",)),
    ("data", ("gsplat_py.data",)),
    ("training", ("gsplat_py.training", "gsplat_py.strategy")),
    ("tools", ("gsplat_py.tools",)),
    ("cli", ("gsplat_py.cli", "gsplat_py.__main__")),
]


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    if module == "gsplat_py":
        return 0  # the package facade re-exports the renderer
    raise AssertionError(
        f"{module}: in no layer; add it to LAYERS (and to the diagram in docs/architecture.md)"
    )


def module_name(path: Path) -> str:
    """gsplat_py.x.y for gsplat_py/x/y.py, gsplat_py.x for gsplat_py/x/__init__.py."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every gsplat_py import in ``source`` (the code of ``module``), the ones
    inside functions included."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # "from . import x": x is a module of that package, or a name in it
                found += [(node.lineno, _submodule_or_package(target, alias.name)) for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "gsplat_py" or name.startswith("gsplat_py.")]


def _submodule_or_package(package: str, name: str) -> str:
    folder = PACKAGE.parent.joinpath(*package.split("."), name)
    return f"{package}.{name}" if folder.is_dir() or folder.with_suffix(".py").exists() else package


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    own = layer_of(module)
    return [
        f"{module}:{line} ({LAYERS[own][0]} layer) imports {name} ({LAYERS[layer_of(name)][0]} layer)"
        for line, name in imported_modules(source, module, is_package)
        if layer_of(name) > own
    ]


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    assert upward_imports(path.read_text(), module_name(path), path.name == "__init__.py") == []


def test_the_layer_check_catches_upward_imports():
    assert upward_imports("from .training.trainer import Trainer", "gsplat_py.model") == [
        "gsplat_py.model:1 (model layer) imports gsplat_py.training.trainer (training layer)"
    ]
    assert len(upward_imports("def f():\n    from ..tools import frames", "gsplat_py.data.scenes")) == 1
    assert len(upward_imports("from .. import cli", "gsplat_py.tools", is_package=True)) == 1
    assert upward_imports("from ..model import GaussianSplats", "gsplat_py.io.ply") == []


def test_the_renderer_imports_alone():
    renderer = LAYERS[0][1]  # gsplat_py/__init__.py loads gsplat_py._version, which is in this layer
    code = (
        "import sys, gsplat_py.rendering; "
        "loaded = sorted(m for m in sys.modules if m.startswith('gsplat_py.') and "
        f"not m.startswith({renderer!r})); print(loaded)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    ).stdout
    assert out.strip() == "[]"


def test_every_folder_of_modules_is_a_regular_package():
    """setup.py's find_packages ships only folders with an __init__.py: a module elsewhere would be
    missing from the wheel while every test run from the source tree still passes."""
    folders = sorted({path.parent for path in SOURCES})
    missing = [
        str(folder.relative_to(PACKAGE.parent)) for folder in folders if not (folder / "__init__.py").exists()
    ]
    assert missing == []
