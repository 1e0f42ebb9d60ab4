"""benchmarks/gpu_check.sh (run on a GPU machine) parses, refuses cleanly without a GPU and includes the
workflow run on local GPUs without a profile."""

import os
import subprocess

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_gpu_check_is_valid_bash():
    proc = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gpu_check_refuses_without_a_gpu_and_writes_nothing(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (fake / "nvidia-smi").chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", SCRIPT, out], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gpu_check: no NVIDIA GPU visible (nvidia-smi -L failed); this script only runs on a GPU machine"]
    assert not out.exists()


def test_gpu_check_runs_the_workflow_on_local_gpus_without_a_profile():
    text = SCRIPT.read_text()
    assert 'snakemake --cores all --resources gpu="$ngpu" --configfile gpu.yaml' in text
    assert "--profile" not in text.replace("without --profile", "").replace("no --profile", "")


def test_gpu_check_refuses_an_unknown_part_before_anything_else(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", SCRIPT, out, "everything"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gpu_check: unknown part 'everything' (all, benchmarks or checks)"]
    assert not out.exists()


def test_gpu_check_parts_split_benchmarks_from_path_checks():
    text = SCRIPT.read_text()
    bench, checks = text.index('if [ "$part" != checks ]; then'), text.index('if [ "$part" != benchmarks ]; then')
    assert bench < text.index("bench_memorization.py") < text.index("--compile") < checks
    assert checks < text.index("medmem train diffusion") < text.index("snakemake --cores all --resources")
