"""Cluster and GPU behaviour: distinct GPUs for concurrent local jobs, multi-process training from one
command, a killed training job resuming on rerun, and the whole workflow through a real SLURM."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_checkout, run_medmem, short_config, snakemake_command

CLAIM = """
import sys, time
from pathlib import Path
from medmem.devices import claim_gpus
got = claim_gpus(int(sys.argv[1]), total=4, lock_dir=Path(sys.argv[2]))
import os
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_concurrent_local_jobs_get_distinct_gpus(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK")}
    holders = []
    for _ in range(2):  # two jobs that hold two GPUs each while they run
        holders.append(subprocess.Popen([sys.executable, "-c", CLAIM, "2", tmp_path, "60"], stdout=subprocess.PIPE,
                                        text=True, env=env))
        holders[-1].claimed = holders[-1].stdout.readline().strip()
    a, b = (h.claimed for h in holders)
    third = subprocess.run([sys.executable, "-c", CLAIM, "1", tmp_path, "0"], capture_output=True, text=True,
                           env=env)
    for h in holders:
        h.kill()
        h.wait()
    assert a == "0,1" and b == "2,3"
    assert third.returncode != 0 and "only 0 of 4 GPUs are free" in third.stderr and "--resources gpu=4" in third.stderr
    # a killed job's claim is gone: the kernel dropped its locks
    again = subprocess.run([sys.executable, "-c", CLAIM, "2", tmp_path, "0"], capture_output=True, text=True, env=env)
    assert again.stdout.strip() == "0,1"


def test_a_scheduler_choice_is_kept():
    from medmem.devices import claim_gpus

    os.environ["CUDA_VISIBLE_DEVICES"] = "3"
    try:
        assert claim_gpus(1, total=8) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from medmem.data.writer import DatasetWriter

    root = tmp_path_factory.mktemp("cluster")
    writer = DatasetWriter(root / "data", ["a"], 16, "brats", [])
    rng = np.random.default_rng(0)
    writer.add("train", rng.integers(0, 256, (16, 1, 16, 16), dtype=np.uint8),
               [{"subject": f"s{i}", "slice": 0} for i in range(16)])
    writer.commit()
    return root


def test_one_command_trains_on_several_processes_under_torchrun(tiny_data):
    args = ["--kimg", "0.016", "--batch", "4", "--base", "16", "--layers", "1", "--mults", "1", "2", "--attention",
            "--timesteps", "25", "--checkpoint-kimg", "1", "--snapshot-kimg", "1", "--log-kimg", "0.008",
            "--snapshot-steps", "2", "--device", "cpu", "--no-progress"]
    code, _, err = run_medmem("train", "diffusion", tiny_data / "data", tiny_data / "one", *args)
    assert code == 0, err
    code, _, err = run_medmem("train", "diffusion", tiny_data / "data", tiny_data / "two", *args, "--processes", "2")
    assert code == 0, err
    assert "training on 2 processes under torchrun" in err and "2 process(es) on cpu" in err
    one, two = (pd.read_csv(tiny_data / run / "log.csv") for run in ("one", "two"))
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)


def test_a_killed_training_job_resumes_from_its_checkpoint_on_rerun(tmp_path):
    """What a node failure or `scancel` does to a training job: the whole job dies at once."""
    work = copy_checkout(tmp_path / "repo")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"] = {"brats20": config["datasets"]["brats20"]}
    config["models"] = {"diffusion": {**config["models"]["diffusion"], "kimg": 1.2, "checkpoint_kimg": 0.08,
                                      "snapshot_kimg": 10, "log_kimg": 0.08}}
    (work / "long.yaml").write_text(yaml.safe_dump(config))
    target = "results/train/brats20/diffusion/network.pt"
    checkpoint = work / "results" / "train" / "brats20" / "diffusion" / "checkpoint.pt"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile", "long.yaml"],
                            cwd=work, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the workflow ended before the kill"
    subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])  # Snakemake and every process of its jobs
    proc.wait()
    time.sleep(0.5)
    assert not (work / target).exists()
    killed_at = __import__("torch").load(checkpoint, weights_only=False)["nimg"]
    assert 0 < killed_at < 1200
    assert snakemake_command("--unlock", "--configfile", "long.yaml", cwd=work).returncode == 0
    rerun = snakemake_command(target, "--cores", "2", "--rerun-incomplete", "--configfile", "long.yaml", cwd=work)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (work / "logs" / "train" / "brats20.diffusion.log").read_text()
    assert f"at {killed_at / 1000:.1f} kimg" in log and "resumed from" in log
    curve = pd.read_csv(work / "results" / "train" / "brats20" / "diffusion" / "log.csv")
    assert curve["kimg"].iloc[0] == pytest.approx(0.08) and curve["kimg"].iloc[-1] == pytest.approx(1.2)


def _slurm_missing() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster needs root"
    missing = [b for b in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch") if not shutil.which(b)]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm, munge, slurmdbd, " \
               "mariadb-server)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed"
    return None


@pytest.mark.slurm
@pytest.mark.skipif(_slurm_missing() is not None, reason=str(_slurm_missing()))
def test_embedded_workflow_through_slurm_equals_the_local_run(local_run, tmp_path):
    local, local_proc = local_run
    assert local_proc.returncode == 0, local_proc.stderr[-3000:]
    cluster = tmp_path / "cluster"
    start = subprocess.run(["timeout", "-s", "KILL", "180", REPO / ".ci" / "slurm-cluster", "start", cluster],
                           capture_output=True, text=True)
    try:
        assert start.returncode == 0, start.stderr + start.stdout
        env = {"SLURM_CONF": str(cluster / "slurm.conf")}
        work = copy_checkout(tmp_path / "repo")
        # the cluster run trains in three segments (ends 0.024, 0.048, then 0.064 kimg) and samples in
        # two shards per model; the local run did both in one job each
        config = short_config()
        for model in ("stylegan2", "diffusion"):
            config["models"][model].update(segment_kimg=0.024, sample_shards=2)
        (work / "short.yaml").write_text(yaml.safe_dump(config))
        began = time.time()
        proc = subprocess.run(
            ["timeout", "-s", "KILL", "1200", sys.executable, "-m", "snakemake", "--profile", "slurm",
             "--configfile", "short.yaml", "--slurm-init-seconds-before-status-checks", "2",
             "--latency-wait", "5"],
            cwd=work, capture_output=True, text=True,
            env={**os.environ, **env, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"})
        print(f"SLURM run: {time.time() - began:.0f} s")
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        # every job ran as a SLURM job; the GPU rules asked for (and got) the fake GPU
        accounting = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobName,State,AllocTRES"], capture_output=True,
                                    text=True, env={**os.environ, **env}).stdout
        rows = [line.split("|") for line in accounting.splitlines() if line]
        assert len(rows) >= 40 and all(state == "COMPLETED" for _, state, _ in rows), accounting
        gpu_jobs = [tres for _, _, tres in rows if "gres/gpu=1" in tres]
        # per dataset × model: 3 training segments and 2 sample shards; 4 searches per dataset
        assert len(gpu_jobs) == 3 * 2 * (3 + 2) + 3 * 4, accounting
        # and computed what the local run computed (CPU, same seeds, same threads: bit for bit)
        import torch

        for d in ("brats20", "brats21", "cxr"):
            for part in (f"data/{d}/train.npy", f"data/{d}/holdout.npy"):
                np.testing.assert_array_equal(np.load(work / "results" / part), np.load(local / "results" / part),
                                              err_msg=part)
            for model in ("stylegan2", "diffusion"):
                # segmented training = one uninterrupted job, bit for bit; the segments' checkpoints are gone
                a, b = (torch.load(r / "results" / "train" / d / model / "network.pt", weights_only=True)
                        for r in (work, local))
                assert a["weights"].keys() == b["weights"].keys()
                assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"]), (d, model)
                assert not any((work / "results" / "train" / d / model / "segments").glob("*.pt"))
                for end in ("0.024", "0.048"):
                    assert "segment done" in (work / "logs" / "train" / f"{d}.{model}.{end}kimg.log").read_text()
                # two shards = the one file, byte for byte
                shards = [np.load(work / "results" / "samples" / d / f"{model}.{i}-of-2.npy") for i in range(2)]
                np.testing.assert_array_equal(np.concatenate(shards),
                                              np.load(local / "results" / "samples" / d / f"{model}.npy"))
            for model in ("stylegan2", "diffusion", "holdout"):
                a = pd.read_parquet(work / "results" / "memorization" / d / f"{model}.parquet")
                b = pd.read_parquet(local / "results" / "memorization" / d / f"{model}.parquet")
                pd.testing.assert_frame_equal(a, b)
        pd.testing.assert_frame_equal(pd.read_csv(work / "results" / "report" / "summary.csv"),
                                      pd.read_csv(local / "results" / "report" / "summary.csv"))
    finally:
        pids = [int(line.split()[1]) for line in (cluster / "pids").read_text().splitlines()] \
            if (cluster / "pids").exists() else []
        stop = subprocess.run([REPO / ".ci" / "slurm-cluster", "stop", cluster], capture_output=True, text=True)
        assert stop.returncode == 0, stop.stderr
    assert len(pids) == 5  # munged, mariadbd, slurmdbd, slurmctld, slurmd: exactly these were stopped
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
