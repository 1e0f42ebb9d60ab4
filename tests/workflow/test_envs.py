"""Every rule has a conda env that lists every third-party module its code imports, pinned as
pyproject pins it."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

SRC = REPO / "src" / "medmem"
# the medmem command a rule runs → the parts of the package that run it
COMMAND_CODE = {
    "phantoms": ["data"], "prepare": ["data", "audit/images.py"],
    "plant": ["memorization"], "memorization": ["memorization"], "memorization-gather": ["memorization"],
    "calibrate": ["memorization"], "detector-train": ["detector", "memorization"],
    "detector-search": ["detector", "memorization"],
    "train": ["training", "models", "sampling"], "sample": ["sampling", "models"],
    "features": ["quality"], "quality": ["quality"], "import-samples": ["audit/images.py", "audit/scan.py"],
    "report": ["report"], "subset": ["data"],
}
# import name → conda-forge package name
CONDA_NAME = {"torch": "pytorch", "PIL": "pillow", "yaml": "pyyaml", "torch_fidelity": "torch-fidelity"}


def rules() -> dict[str, dict]:
    """rule name → {env, command} from the .smk files."""
    found = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^\s*rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            command = re.search(r'shell:\s*\n\s*"medmem ([\w-]+)', block)
            found[name] = {"env": env and (smk.parent / env.group(1)).resolve(), "command": command and command.group(1)}
    return found


def _runtime_nodes(tree):
    """Every node except those under `if TYPE_CHECKING:` (never run)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    return ast.walk(tree)


def imported_modules(files) -> set[str]:
    """Top-level names of every module imported anywhere in `files` (function-local imports too)."""
    names = set()
    for path in files:
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "find_spec" and node.args:
                if isinstance(node.args[0], ast.Constant):  # data read from a package (nilearn's templates)
                    names.add(node.args[0].value.split(".")[0])
    return names


def code_of(command: str) -> set[Path]:
    """The command's package parts and every medmem module they import, transitively."""
    files = {p for part in COMMAND_CODE[command]
             for p in ([SRC / part] if part.endswith(".py") else (SRC / part).rglob("*.py"))}
    files |= {SRC / "errors.py", SRC / "params.py"}  # cli.py imports these at the top, each command lazily
    todo = list(files)
    while todo:
        for node in _runtime_nodes(ast.parse(todo.pop().read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) and node.level == 0 else None
            if module and module.startswith("medmem"):
                parts = module.split(".")[1:]
                # the module, or the package, and every parent package's __init__ (Python runs them all)
                candidates = [SRC.joinpath(*parts).with_suffix(".py"), SRC.joinpath(*parts, "__init__.py")]
                candidates += [SRC.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
                for c in candidates:
                    if c.is_file() and c not in files:
                        files.add(c)
                        todo.append(c)
    return files


def third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("medmem", "__future__")}


def env_packages(path: Path) -> dict[str, str]:
    spec = yaml.safe_load(path.read_text())
    assert spec["channels"] == ["conda-forge", "nodefaults"], path
    out = {}
    for dep in spec["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            name, _, version = re.split(r"(==|=)", entry, maxsplit=1) if "=" in entry else (entry, "", "")
            out[name.strip()] = version.strip()
    return out


RULES = rules()


def test_every_rule_has_an_env_and_a_known_command():
    assert len(RULES) >= 15
    for name, rule in RULES.items():
        assert rule["env"] and rule["env"].is_file(), f"rule {name} has no conda env"
        assert rule["command"] in COMMAND_CODE, f"rule {name} runs an unmapped command {rule['command']!r}"


@pytest.mark.parametrize("rule", sorted(RULES))
def test_env_lists_every_third_party_module_the_rule_imports(rule):
    needed = third_party(imported_modules(code_of(RULES[rule]["command"])))
    listed = env_packages(RULES[rule]["env"])
    missing = {CONDA_NAME.get(m, m) for m in needed} - set(listed)
    assert not missing, f"rule {rule}: {RULES[rule]['env'].name} lacks {sorted(missing)}"
    assert "python" in listed


def test_env_pins_match_pyproject():
    import tomllib

    pins = {}
    for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        if "==" in dep:
            name, version = dep.split("==")
            pins[CONDA_NAME.get(name.replace("-", "_"), name)] = version
    assert {"pytorch", "torchvision", "torch-fidelity", "diffusers"} <= set(pins)
    for path in (REPO / "workflow" / "envs").glob("*.yaml"):
        for name, version in env_packages(path).items():
            if name in pins:
                assert version == pins[name], f"{path.name}: {name}={version}, pyproject pins {pins[name]}"
            assert version or name == "pip", f"{path.name}: {name} has no version"
