"""Every public function, class and method of the generator modules and the shared helpers has a docstring."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "medmem"
MODULES = sorted(
    [p for folder in ("models", "sampling", "training") for p in (PACKAGE / folder).glob("*.py")]
    + [PACKAGE / f"{name}.py" for name in ("devices", "precision", "parallel", "weights", "io", "images")]
)


def undocumented(source: str) -> list[str]:
    """Public top-level functions and classes, and public methods of public classes, without a docstring."""
    missing = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            if not ast.get_docstring(node):
                missing.append(node.name)
            if isinstance(node, ast.ClassDef):
                missing += [f"{node.name}.{m.name}" for m in node.body
                            if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")
                            and not ast.get_docstring(m)]
    return missing


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_public_names_have_docstrings(path):
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name}: no module docstring"
    assert undocumented(path.read_text()) == []


def test_the_check_finds_a_missing_docstring():
    source = 'def f():\n    """Doc."""\n\n\nclass A:\n    """Doc."""\n\n    def g(self):\n        pass\n\n\ndef _h():\n    pass\n'
    assert undocumented(source) == ["A.g"]
