"""The package's imports go one way: shared helpers ← models ← sampling ← training ← stages ← cli.

Every `import medmem…` / `from medmem… import …` in src/medmem (at any depth, including imports
inside functions) is read with `ast`, so a lazy import cannot hide a cycle.
"""

import ast
import collections
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# lowest first; a module may import its own layer and the layers below it, never one above
LAYERS = [
    {"medmem", "errors", "io", "devices", "precision", "parallel", "weights", "images", "config", "params"},  # shared
    {"models"},  # networks only
    {"sampling"},  # samplers, sample files
    {"training"},  # the loop, the tasks, DDP
    {"data", "memorization", "detector", "quality", "report", "audit", "plan"},  # stages
    {"cli"},
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """medmem.sampling.writer → sampling; medmem.io → io; medmem → medmem."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "medmem"


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """{module: medmem modules it imports} for every module under src/medmem."""
    graph = {}
    for path in sorted((src / "medmem").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "medmem"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] != "medmem":
                    continue
                if base == "medmem":  # from medmem import precision → medmem.precision
                    targets |= {f"medmem.{a.name}" for a in node.names}
                else:
                    targets.add(base)
        graph[module] = targets
    return graph


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node (or a self-loop)."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import against the layer order, every top-level unit missing from LAYERS, and every
    cycle between units (packages and top-level modules)."""
    problems = []
    units = collections.defaultdict(set)
    for module, targets in graph.items():
        here = unit_of(module)
        if here not in LAYER:
            problems.append(f"{module}: {here} is in no layer of tests/test_imports.py")
            continue
        for target in targets:
            there = unit_of(target)
            if there not in LAYER:
                problems.append(f"{module} imports {target}: {there} is in no layer")
            elif LAYER[there] > LAYER[here]:
                problems.append(f"{module} imports {target} (layer {LAYER[there]} above {LAYER[here]})")
            if there != here:
                units[here].add(there)
    problems += ["cycle: " + " → ".join(cycle) for cycle in _cycles(units)]
    return problems


def test_the_package_imports_go_one_way():
    graph = import_graph()
    assert "medmem.sampling.writer" in graph and "medmem.images" in graph["medmem.sampling.writer"]
    assert violations(graph) == []


def test_models_import_no_sampling_or_training_and_sampling_no_training():
    graph = import_graph()
    for module, targets in graph.items():
        if unit_of(module) == "models":
            assert not {unit_of(t) for t in targets} & {"sampling", "training"}, module
        if unit_of(module) == "sampling":
            assert "training" not in {unit_of(t) for t in targets}, module


@pytest.mark.parametrize("graph, expected", [
    # the cycle this layout removed: sampling.writer used training.loop's save_grid
    ({"medmem.sampling.writer": {"medmem.training.loop"}, "medmem.training.loop": set()},
     "medmem.sampling.writer imports medmem.training.loop (layer 3 above 2)"),
    ({"medmem.models.noise_schedule": {"medmem.sampling.samplers"}}, "layer 2 above 1"),
    ({"medmem.report.run": {"medmem.audit.run"}, "medmem.audit.run": {"medmem.report.run"}},
     "cycle: audit → report → audit"),
    ({"medmem.newstage.run": {"medmem.io"}}, "newstage is in no layer"),
])
def test_the_checker_flags_a_wrong_direction_a_cycle_and_an_unplaced_module(graph, expected):
    assert any(expected in problem for problem in violations(graph)), violations(graph)


def test_relative_and_lazy_imports_are_read(tmp_path):
    package = tmp_path / "medmem" / "sampling"
    package.mkdir(parents=True)
    (tmp_path / "medmem" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "x.py").write_text("def f():\n    from ..training import loop\n    from . import writer\n")
    graph = import_graph(tmp_path)
    assert graph["medmem.sampling.x"] == {"medmem.training", "medmem.sampling"}
    assert any("layer 3 above 2" in p for p in violations(graph))
