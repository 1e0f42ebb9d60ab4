import hashlib
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np

from medmem.data.phantoms import make_brats_phantoms, make_cxr_phantoms


def _digest_tree(root):
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = str(path.relative_to(root))
        if path.name.endswith((".nii", ".nii.gz")):
            data = np.asarray(nib.load(path).dataobj)
            out[key] = hashlib.sha256(data.tobytes()).hexdigest()
        else:
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_brats_phantoms_are_deterministic_and_seed_dependent(tmp_path):
    make_brats_phantoms(tmp_path / "a", 2, seed=3, shape=(30, 30, 20), release=2020)
    make_brats_phantoms(tmp_path / "b", 2, seed=3, shape=(30, 30, 20), release=2020, workers=2)
    make_brats_phantoms(tmp_path / "c", 2, seed=4, shape=(30, 30, 20), release=2020)
    a, b, c = (_digest_tree(tmp_path / x) for x in "abc")
    assert a == b and a.keys() == c.keys() and a != c
    assert "BraTS20_Training_001/BraTS20_Training_001_t1.nii" in a


def test_brats_phantom_anatomy_and_tumour(brats_phantom_dir):
    subject = sorted(brats_phantom_dir.iterdir())[0]
    vols = {m: np.asarray(nib.load(subject / f"{subject.name}_{m}.nii.gz").dataobj) for m in
            ("t1", "t2", "flair", "t1ce", "seg")}
    assert vols["t1"].shape == (60, 60, 39) and vols["t1"].dtype == np.int16
    assert set(np.unique(vols["seg"])) == {0, 1, 2, 4}
    brain = vols["t1"] > 0
    assert 0.1 < brain.mean() < 0.6 and not brain[0].any()  # skull-stripped, zero background
    oedema = vols["seg"] == 2
    normal = brain & (vols["seg"] == 0)
    # contrasts: oedema bright on FLAIR, enhancing rim bright on T1ce
    assert vols["flair"][oedema].mean() > 1.3 * vols["flair"][normal].mean()
    assert vols["t1ce"][vols["seg"] == 4].mean() > 1.3 * vols["t1ce"][normal].mean()


def test_cxr_phantoms_are_deterministic(tmp_path):
    make_cxr_phantoms(tmp_path / "a", 6, seed=1, height=64)
    make_cxr_phantoms(tmp_path / "b", 6, seed=1, height=64, workers=2)
    assert _digest_tree(tmp_path / "a") == _digest_tree(tmp_path / "b")


def _bar_redraws(tmp_path, env_extra: dict) -> int:
    """Redraws of `medmem phantoms brats`' progress bar written to a pipe (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")} | env_extra
    run = subprocess.run([sys.executable, "-m", "medmem.cli", "phantoms", "brats", str(tmp_path / "out"),
                          "--subjects", "6", "--shape", "12", "12", "8", "--workers", "1"],
                         capture_output=True, env=env, check=True)
    shutil.rmtree(tmp_path / "out")
    return run.stderr.count(b"\r")


def test_progress_bars_redraw_rarely_when_not_a_terminal_and_a_user_setting_wins(tmp_path):
    # tqdm redraws on every update here (6 subjects, each slower than its 0.1 s default);
    # off a terminal medmem asks for once a minute: the opening and closing lines only.
    assert _bar_redraws(tmp_path, {}) == 2
    assert _bar_redraws(tmp_path, {"TQDM_MININTERVAL": "0"}) >= 5
