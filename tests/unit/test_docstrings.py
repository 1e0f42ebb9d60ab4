"""Every public function and class of the stage packages has a docstring (issue 14, point 5).

Public: a module-level function or class whose name does not start with "_", and the public methods
(and properties) of public classes. Read with `ast`, so nothing is imported.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "medmem"
COVERED = ["data", "memorization", "detector", "quality", "audit", "plan.py", "report"]


def public_definitions(path: Path):
    """(qualified name, line, docstring or None) of every public definition in one module."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node.name, node.lineno, ast.get_docstring(node)
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith("_"):
                        yield f"{node.name}.{sub.name}", sub.lineno, ast.get_docstring(sub)


def modules():
    for name in COVERED:
        path = SRC / name
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def test_the_counter_sees_what_it_should(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('def f():\n    """Doc."""\n\n\ndef g():\n    pass\n\n\ndef _h():\n    pass\n\n\n'
                      'class A:\n    def m(self):\n        pass\n\n    def _p(self):\n        pass\n')
    found = {name: doc for name, _, doc in public_definitions(module)}
    assert found == {"f": "Doc.", "g": None, "A": None, "A.m": None}


@pytest.mark.parametrize("path", list(modules()), ids=lambda p: str(p.relative_to(SRC)))
def test_public_definitions_have_docstrings(path):
    missing = [f"{path.relative_to(SRC)}:{line} {name}" for name, line, doc in public_definitions(path)
               if not (doc and doc.strip())]
    assert not missing, "no docstring: " + ", ".join(missing)
