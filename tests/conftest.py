import shutil
import subprocess
import sys
from pathlib import Path

import audit_images
import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def write_subject(root: Path, name: str, volumes: dict, gz: bool = True, rename: dict | None = None) -> Path:
    """Write a BraTS-style subject folder `root/name/name_<mod>.nii[.gz]` from arrays."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".nii.gz" if gz else ".nii"
    for mod, data in volumes.items():
        filename = (rename or {}).get(mod, f"{name}_{mod}{ext}")
        nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), folder / filename)
    return folder


def simple_volumes(shape=(20, 20, 4), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    volumes = {mod: rng.integers(0, 400, shape).astype(np.int16) for mod in ("t1", "t1ce", "t2", "flair")}
    volumes["seg"] = rng.choice(np.array([0, 1, 2, 4], np.uint8), shape)
    return volumes


def copy_checkout(dst: Path) -> Path:
    """Copy the working tree as a clean checkout sees it: tracked and unignored files only.

    Never the virtual environment, results or caches, which can be gigabytes (CI's `.venv` is).
    """
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            src = REPO / name
            if src.is_file():
                (dst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst / name)
    else:  # not a git checkout (an unpacked archive)
        shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(
            "results", ".snakemake", "logs", ".git", "*.egg-info", ".venv", "venv", "__pycache__"))
    return dst


def write_blob_dataset(root: Path) -> Path:
    """A tiny 2-channel training set in ROOT/data: 24 images of a disc at 8 heights and its inverse."""
    from medmem.data.writer import DatasetWriter

    writer = DatasetWriter(root / "data", ["a", "b"], 16, "brats", [])
    yy, xx = np.mgrid[:16, :16]
    images = []
    for i in range(24):
        blob = ((yy - 4 - i % 8) ** 2 + (xx - 8) ** 2 < 16).astype(np.uint8) * 200
        images.append(np.stack([blob, 255 - blob]))
    writer.add("train", np.array(images), [{"subject": f"s{i}", "slice": 0} for i in range(24)])
    writer.commit()
    return root


def train_and_kill_at_first_checkpoint(args, output_dir: Path, poll: float = 0.02) -> None:
    """Start `medmem ARGS OUTPUT_DIR ...` and SIGKILL it as soon as its first checkpoint exists."""
    import signal
    import time

    args = [str(a) for a in args]
    proc = subprocess.Popen([sys.executable, "-m", "medmem.cli", *args[:3], str(output_dir), *args[3:]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (output_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(poll)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (output_dir / "network.pt").exists()


def run_medmem(*args, cwd=None):
    """Run the `medmem` command in a subprocess: (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "medmem.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def brats_phantom_dir(tmp_path_factory):
    from medmem.data.phantoms import make_brats_phantoms

    out = tmp_path_factory.mktemp("phantoms") / "brats"
    make_brats_phantoms(out, n_subjects=5, seed=7, shape=(60, 60, 39), release=2021, workers=2)
    return out


@pytest.fixture(scope="session")
def cxr_phantom_dir(tmp_path_factory):
    from medmem.data.phantoms import make_cxr_phantoms

    out = tmp_path_factory.mktemp("phantoms") / "cxr"
    make_cxr_phantoms(out, n_subjects=15, seed=5, height=96, workers=2)
    return out


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A torch-fidelity Inception weight file made offline: random weights with BatchNorm statistics
    re-estimated on random images (plain random weights give degenerate features and FID 0).
    93 MB: built here, never committed."""
    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    torch.manual_seed(0)
    original = fe.FeatureExtractorInceptionV3.load_state_dict
    fe.load_state_dict_from_url, url_loader = (lambda *a, **k: {}), fe.load_state_dict_from_url
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict = original
        fe.load_state_dict_from_url = url_loader
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            net(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=gen))
    net.eval()
    path = tmp_path_factory.mktemp("inception") / "inception-test.pth"
    torch.save(net.state_dict(), path)
    return path


def snakemake_command(*args, cwd=REPO, timeout=None, env=None):
    """Run Snakemake with this Python's environment first on PATH; (completed process)."""
    import os

    env = {**os.environ, **(env or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([sys.executable, "-m", "snakemake", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def short_config() -> dict:
    """config/test.yaml (the embedded default, shortened); GPU rules ask for one GPU (a fake GRES on
    the test cluster; on a machine without GPUs the jobs run on the CPU)."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    for rule in ("train_stylegan2", "train_diffusion", "sample_stylegan2", "sample_diffusion",
                 "memorization_shard"):
        config.setdefault("resources", {}).setdefault(rule, {}).update(gpu=1, runtime=20, mem_mb=3000)
    return config


@pytest.fixture(scope="session")
def local_run(tmp_path_factory):
    """The short embedded workflow run locally once, in a clean copy of the checkout: (folder, process)."""
    import yaml

    work = copy_checkout(tmp_path_factory.mktemp("local") / "repo")
    (work / "short.yaml").write_text(yaml.safe_dump(short_config()))
    proc = snakemake_command("--cores", "2", "--configfile", "short.yaml", cwd=work)
    return work, proc


def paper_dataset_paths(tmp_path: Path) -> Path:
    """A config override (tmp_path/paths.yaml) giving config/paper.yaml's three datasets empty folders."""
    import yaml

    override = {"datasets": {}}
    for name in ("brats20", "brats21", "cxr"):
        (tmp_path / name).mkdir()
        override["datasets"][name] = {"source": str(tmp_path / name)}
    (tmp_path / "paths.yaml").write_text(yaml.safe_dump(override))
    return tmp_path / "paths.yaml"


# --- the audit's image sets (tests/unit/test_audit.py, tests/workflow/test_configs.py) ---


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Training, held-out and synthetic sets in the study's layout: samples 0 and 1 copy training
    images 5 and 2 (sample 1 shifted by one pixel), the rest are new images."""
    root = tmp_path_factory.mktemp("study")
    train, keys = audit_images.anatomy(4, 4, seed=0)
    held, hkeys = audit_images.anatomy(3, 4, seed=1)
    fresh, _ = audit_images.anatomy(2, 3, seed=2)
    samples = fresh.copy()
    samples[0] = train[5]
    samples[1] = np.roll(train[2], 1, axis=-1)
    audit_images.write_study(root / "train", train, audit_images.subject_names(keys))
    audit_images.write_study(root / "holdout", held, [f"Subject_{int(s) + 10}_slice_{z}" for s, z in hkeys])
    audit_images.write_study(root / "samples", samples, [f"seed{i:04d}" for i in range(len(samples))])
    return root, train, samples


@pytest.fixture(scope="module")
def audited(study, tmp_path_factory):
    root, _, _ = study
    out = tmp_path_factory.mktemp("audit") / "out"
    from medmem.cli import main

    code = main(["audit", str(root / "train"), str(root / "samples"), str(out), "--holdout", str(root / "holdout"),
                 "--device", "cpu", "--planted", "4", "--pairs", "2", "--workers", "2", "--detector-steps", "0"])
    assert code == 0
    return out


def pytest_collection_modifyitems(config, items):
    """Every test under tests/workflow runs Snakemake or an install: marked slow (`-m "not slow"` skips)."""
    for item in items:
        if "workflow" in Path(str(item.fspath)).relative_to(REPO / "tests").parts[:1]:
            item.add_marker(pytest.mark.slow)
