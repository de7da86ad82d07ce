"""No module but ``playground/ml/checkpoints.py`` may unpickle, torch.load unsafely, eval or exec.

Files users open go through checkpoints.py, which is written and tested for hostile
input; this test keeps the rest of the package from growing its own way in. It reads
the source with ``ast``, so comments, strings and method calls such as ``app.exec()``
do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "playground"
ALLOWED = {PACKAGE / "ml" / "checkpoints.py"}
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve"}
PICKLE_LOADERS = {"load", "loads", "Unpickler", "open"}  # shelve.open unpickles too


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name / Attribute chain, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Every unsafe loading or code-running construct in ``source``, as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            for alias in node.names:
                if alias.name in PICKLE_LOADERS:
                    found.append(f"{filename}:{line}: imports {node.module}.{alias.name}")
        if isinstance(node, ast.Attribute) and node.attr == "Unpickler":
            found.append(f"{filename}:{line}: uses {_dotted(node) or 'Unpickler'}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        module, _, attr = name.rpartition(".")
        if module.split(".")[0] in PICKLE_MODULES and attr in PICKLE_LOADERS - {"Unpickler"}:
            found.append(f"{filename}:{line}: calls {name}(")
        elif name == "Unpickler":
            found.append(f"{filename}:{line}: calls Unpickler(")
        elif name == "torch.load" and not _keyword_is_true(node, "weights_only"):
            found.append(f"{filename}:{line}: calls torch.load( without weights_only=True")
        elif name in ("np.load", "numpy.load") and _keyword_is_true(node, "allow_pickle"):
            found.append(f"{filename}:{line}: calls {name}( with allow_pickle=True")
        elif isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            found.append(f"{filename}:{line}: calls {node.func.id}(")
    return found


def _package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p not in ALLOWED)


def test_the_package_has_no_unsafe_loading_outside_checkpoints():
    files = _package_files()
    assert len(files) > 10 and PACKAGE / "ml" / "som.py" in files  # it really reads the package
    problems = [p for f in files for p in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE)))]
    assert problems == []


@pytest.mark.parametrize("source, words", [
    ("import pickle\npickle.load(f)", "calls pickle.load("),
    ("import pickle\nx = pickle.loads(b)", "calls pickle.loads("),
    ("import pickle\nclass U(pickle.Unpickler):\n    pass", "uses pickle.Unpickler"),
    ("import pickle\npickle.Unpickler(f).load()", "uses pickle.Unpickler"),
    ("from pickle import Unpickler\nUnpickler(f)", "imports pickle.Unpickler"),
    ("from pickle import loads as l", "imports pickle.loads"),
    ("import _pickle\n_pickle.loads(b)", "calls _pickle.loads("),
    ("import torch\ntorch.load(p)", "torch.load( without weights_only=True"),
    ("import torch\ntorch.load(p, weights_only=False)", "torch.load( without weights_only=True"),
    ("import numpy as np\nnp.load(p, allow_pickle=True)", "allow_pickle=True"),
    ("eval('1 + 1')", "calls eval("),
    ("exec(code, {})", "calls exec("),
])
def test_the_checker_finds_each_bad_pattern(source, words):
    problems = unsafe_calls(source, "bad.py")
    assert problems and any(words in p for p in problems), problems
    assert problems[0].startswith("bad.py:")


def test_the_checker_lets_safe_code_through():
    source = """
import json, torch, numpy as np
torch.load(path, map_location="cpu", weights_only=True)
np.load(path, allow_pickle=False)
app.exec()
dialog.exec()
result = model.eval()
text = "pickle.loads(b) and eval('x')"  # in a string: not code
# pickle.load(f) in a comment
json.loads(text)
"""
    assert unsafe_calls(source) == []
