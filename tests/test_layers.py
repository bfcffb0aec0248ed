"""The layer order, checked on every module's imports: a package imports only from its own layer or
layers below it, so the methods never depend on the pipeline or the command line that wires them."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "irmscope"

#: bottom to top; a name is a top-level module or package of irmscope
LAYERS = [
    {
        "errors",
        "io",
        "paths",
        "hub",
        "stats",
        "text",
        "locking",
        "validation",
        "distributed",
        "artifacts",
        "__init__",
    },
    {"models", "data", "rewards"},
    {"activations"},
    {"sae"},
    {"config", "tune"},  # config reads the SAE trainer's settings; tuning reads the config
    {"elicit", "interpret", "validate", "probes", "irl", "audit"},  # the methods
    {"leaderboard"},
    {"report"},
    {"stages", "runs", "pipeline", "edit"},
    {"cli", "__main__"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    """The irmscope top-level names a module imports (absolute imports; the package uses no others)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[1] for name in names if name.startswith("irmscope.")}
    return found


def _top(path: Path) -> str:
    return path.relative_to(SRC).with_suffix("").parts[0]


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer():
    assert {_top(path) for path in MODULES} <= set(LAYER)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_the_layers(path):
    here = _top(path)
    upward = sorted(name for name in _imports(path) if LAYER.get(name, 0) > LAYER[here])
    assert not upward, f"{here} (layer {LAYER[here]}) imports {upward} from a higher layer"


def test_no_private_name_is_imported_across_packages():
    crossing = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("irmscope."):
                other = node.module.split(".")[1]
                private = [a.name for a in node.names if a.name.startswith("_")]
                if other != _top(path) and private:
                    crossing.append(f"{path.relative_to(SRC)}: {private} from {node.module}")
    assert not crossing, "\n".join(crossing)


def test_the_check_sees_an_upward_import(tmp_path):
    """The test above can fail: a method module importing the pipeline is caught."""
    module = tmp_path / "bad.py"
    module.write_text("from irmscope.pipeline import run_pipeline\nimport irmscope.cli\n")
    assert _imports(module) == {"pipeline", "cli"}
    assert LAYER["pipeline"] > LAYER["elicit"]
