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
        "provenance",
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


#: the longest a function in src/ may be (signature and docstring included), and the pipeline's loop
LONGEST_FUNCTION, LONGEST_RUN_PIPELINE = 85, 60


def _function_lengths(root: Path) -> dict[str, int]:
    """``{"module.py:line name": lines}`` for every function and method under ``root``."""
    lengths = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lengths[f"{path.relative_to(root)}:{node.lineno} {node.name}"] = (
                    node.end_lineno - node.lineno + 1
                )
    return lengths


def _too_long(root: Path) -> dict[str, int]:
    return {name: n for name, n in _function_lengths(root).items() if n > LONGEST_FUNCTION}


def test_functions_stay_short():
    """A function longer than a screen and a half does more than one thing: split it (issue 18's bound of
    about 80 lines); the pipeline itself stays a short loop over the stage registry."""
    assert not _too_long(SRC), f"split these functions (at most {LONGEST_FUNCTION} lines): {_too_long(SRC)}"
    (run_pipeline,) = [n for name, n in _function_lengths(SRC).items() if name.endswith(" run_pipeline")]
    assert run_pipeline <= LONGEST_RUN_PIPELINE


def test_the_length_check_sees_a_long_function(tmp_path):
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * LONGEST_FUNCTION)
    (tmp_path / "short.py").write_text("def g():\n    return 1\n")
    assert list(_too_long(tmp_path)) == ["long.py:1 f"]
