"""The install: constraints.txt locks what the README's two commands install and agrees with
pyproject.toml and the conda envs; the main install (no test extra) holds everything the README's
commands import; the jobs run with the Python that runs Snakemake."""

import ast
import os
import platform
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO, copy_checkout
from packaging.markers import default_environment
from packaging.requirements import Requirement
from test_envs import env_packages

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Modules that parts of Snakemake the README uses import only when used (read in snakemake 9.27.1):
# `snakemake --report`: jinja2 (report/__init__.py:500), pygments (report/html_reporter/__init__.py:99),
# docutils, yte, humanfriendly (report/__init__.py:22-27); `--profile slurm` (executor: slurm in
# slurm/config.yaml): the executor plugin.
SNAKEMAKE_FEATURES = {"jinja2", "pygments", "docutils", "yte", "humanfriendly", "snakemake_executor_plugin_slurm"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock() -> dict[str, str]:
    """constraints.txt as {canonical name: version}; every line `name==version` or a comment."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.+!-]*", line), f"constraints.txt: {line!r}"
            name, version = line.split("==")
            assert canonical(name) not in pins, f"constraints.txt lists {name} twice"
            pins[canonical(name)] = version
    return pins


def closure(requirements: list[str]) -> dict[str, str]:
    """Every distribution `requirements` pull in, as installed here: {canonical name: version}.

    Markers are evaluated for this interpreter and platform (and for the extras asked of each
    distribution, as pip does); each distribution's own requirements come from its installed
    metadata. A required distribution that is not installed fails the test."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset]] = set()
    todo = [(Requirement(r), frozenset()) for r in requirements]
    env = default_environment()
    while todo:
        req, asked = todo.pop()
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in (asked or {""})):
            continue
        name = canonical(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} is required ({req}) but not installed")
        found[name] = dist.version
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return found


def test_pyproject_pins_every_direct_dependency_exactly_as_the_lock():
    pins = lock()
    for dep in PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["test"]:
        req = Requirement(dep)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"pyproject.toml: {dep} is not pinned with =="
        assert pins.get(canonical(req.name)) == spec[0].version, \
            f"pyproject.toml pins {dep}, constraints.txt has {req.name}=={pins.get(canonical(req.name))}"


def test_the_lock_is_the_closure_of_the_main_install_and_the_test_extra_as_installed():
    """Every distribution medmem[test] needs is in the lock at the version installed here (CI installs
    with the lock, so this holds there); on the lock's own platform nothing else is in it."""
    pins = lock()
    needed = closure(PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["test"])
    missing = sorted(set(needed) - set(pins))
    assert not missing, f"constraints.txt lacks {missing}: run `python tools/lock.py`"
    differ = {n: (v, pins[n]) for n, v in needed.items() if pins[n] != v}
    assert not differ, f"installed ≠ constraints.txt: {differ}"
    header = (REPO / "constraints.txt").read_text().split("\n", 3)[2]
    if f"on {platform.system()} {platform.machine()}, Python {sys.version_info[0]}.{sys.version_info[1]}" in header:
        stale = set(pins) - set(needed)
        assert not stale, f"constraints.txt holds {sorted(stale)}, which nothing requires: run `python tools/lock.py`"


def test_the_closure_follows_markers_and_extras():
    """The closure function itself, on requirements with a known answer."""
    assert "pygments" not in closure(["snakemake==" + metadata.version("snakemake")])
    assert "pygments" in closure(["snakemake[reports]==" + metadata.version("snakemake")])
    assert closure(['pytest; python_version < "3"']) == {}


def test_conda_envs_pin_what_the_lock_pins():
    pins = lock()
    pypi_name = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
    for path in sorted((REPO / "workflow" / "envs").glob("*.yaml")):
        for name, version in env_packages(path).items():
            if name in ("python", "pip"):
                continue
            pypi = canonical(pypi_name.get(name, name))
            assert pins.get(pypi) == version, f"{path.name}: {name}={version}, constraints.txt has {pins.get(pypi)}"


def test_the_readme_installs_with_the_lock_and_ci_runs_its_test_command():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv \.venv && .*$", readme, flags=re.M)
    assert len(commands) == 2, commands
    assert all("pip install -c constraints.txt -e " in c for c in commands), commands
    ci = (REPO / ".ci" / "run").read_text()
    assert f'test_command="{commands[1]}"' in ci and 'bash -c "$test_command"' in ci
    assert "pip install" not in ci.replace(commands[1], ""), "CI installs something the README does not"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "find_spec" and node.args \
                and isinstance(node.args[0], ast.Constant):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_the_main_install_holds_every_module_the_readme_commands_import():
    """`medmem ...`, `snakemake ...` (the workflow, --report, --profile slurm), the benchmark and the lock
    tool the README shows: the distributions of their modules are in the closure of medmem without the
    test extra."""
    code = [*(REPO / "src" / "medmem").rglob("*.py"), *(REPO / "benchmarks").glob("*.py"), REPO / "tools" / "lock.py",
            *(REPO / "workflow" / "rules").glob("*.smk")]
    modules = set()
    for path in code:
        if path.suffix == ".smk":  # Python statements of a rule file: its import lines
            modules |= {m.split(".")[0] for m in re.findall(r"^(?:from|import) ([\w.]+)", path.read_text(), re.M)}
        else:
            modules |= _imports(path)
    local = {path.stem for path in code if path.parent.name == "benchmarks"}  # benchmarks import each other
    modules = {m for m in modules | SNAKEMAKE_FEATURES if m not in sys.stdlib_module_names} - {"medmem", "pip"} - local
    providers = metadata.packages_distributions()
    main = closure(PYPROJECT["dependencies"])
    for module in sorted(modules):
        dists = {canonical(d) for d in providers.get(module, [])}
        assert dists, f"no installed distribution provides {module}"
        assert dists & set(main), f"{module} ({sorted(dists)}) is not in the main install, only {sorted(dists)}"
    test_only = set(closure(PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["test"])) - set(main)
    assert {"pytest", "snakefmt"} <= test_only and "pygments" in main  # the check sees the split


def test_jobs_run_with_snakemakes_python_without_an_activated_venv(tmp_path):
    """The venv's snakemake called by its path, with no Python that has medmem's dependencies on PATH
    (cron, a submission script): the job still runs (one phantoms job)."""
    snakemake = Path(sys.executable).parent / "snakemake"
    if not snakemake.is_file():
        pytest.skip(f"no snakemake script beside {sys.executable}")
    work = copy_checkout(tmp_path / "repo")
    (work / "tiny.yaml").write_text(
        "datasets:\n  tiny:\n    kind: brats\n    source: phantom\n    size: 32\n"
        "    split: {train: 1, holdout: 1, seed: 0}\n"
        "    phantom: {subjects: 2, seed: 1, shape: [30, 30, 39], release: 2020}\nmodels: {}\n")
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    proc = subprocess.run([str(snakemake), "results/phantoms/tiny", "--cores", "1", "--configfile", "tiny.yaml"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    log = work / "logs" / "phantoms" / "tiny.log"
    assert proc.returncode == 0, (log.read_text() if log.exists() else "") + proc.stderr[-2000:]
    assert sorted(p.name for p in (work / "results" / "phantoms" / "tiny").glob("BraTS*")) == \
        ["BraTS20_Training_001", "BraTS20_Training_002"]
