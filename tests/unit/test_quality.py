"""FID, KID and IS: our Fréchet distance against scipy, the whole offline path against
torch-fidelity's own calculate_metrics, and the 'not computed' record when weights are missing."""

import json
import os

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import run_medmem

from medmem.quality.metrics import frechet_distance, statistics


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1.astype(np.float64) @ s2.astype(np.float64))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_frechet_distance_of_diagonal_gaussians_by_hand():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2  # |Δμ|² + Σ (√a − √b)²
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n, d", [(500, 64), (40, 64)])  # full rank, and rank-deficient as with few images
def test_frechet_distance_against_scipy_in_float64(n, d):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    y = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5
    mu1, s1 = statistics(x)
    mu2, s2 = statistics(y)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-6 * np.trace(s1))


def _images(n, seed, shift=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    out = np.zeros((n, 2, 32, 32), np.uint8)
    for i in range(n):
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 9)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        out[i, 0] = np.clip(disc * (150 + shift) + rng.integers(0, 40, (32, 32)), 0, 255)
        out[i, 1] = np.clip(255 - disc * 200 + rng.integers(0, 30, (32, 32)) - shift, 0, 255)
    return out


class _Channel(torch.utils.data.Dataset):
    def __init__(self, images, c):
        self.images, self.c = images, c

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i, self.c:self.c + 1].copy()).expand(3, -1, -1)


def test_metrics_offline_match_torch_fidelity(tmp_path, inception_weights):
    import torch_fidelity

    train, samples = _images(32, 0), _images(24, 1, shift=60)
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "samples.npy", samples)
    weights = ["--weights", inception_weights, "--inception", "required", "--device", "cpu", "--batch", "16"]
    code, _, err = run_medmem("features", tmp_path / "train.npy", tmp_path / "train.npz", "--channel-names", "t1",
                              "seg", *weights)
    assert code == 0, err
    code, _, err = run_medmem("quality", tmp_path / "samples.npy", tmp_path / "train.npz", tmp_path / "q.json",
                              "--kid-subsets", "20", *weights)
    assert code == 0, err
    ours = json.loads((tmp_path / "q.json").read_text())
    assert ours["computed"] and set(ours["channels"]) == {"t1", "seg"}
    for c, name in enumerate(["t1", "seg"]):
        theirs = torch_fidelity.calculate_metrics(
            input1=_Channel(samples, c), input2=_Channel(train, c), cuda=False, fid=True, kid=True, isc=True,
            feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_weights),
            kid_subsets=20, kid_subset_size=24, batch_size=16, verbose=False, cache=False,
            save_cpu_ram=True)
        got = ours["channels"][name]
        assert got["fid"] > 1  # distinct distributions, usable features
        assert got["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
        assert got["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
        assert got["is_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)
        assert got["kid_subset_size"] == 24 and got["is_1split"] > 0
    assert ours["mean"]["fid"] == pytest.approx((ours["channels"]["t1"]["fid"] + ours["channels"]["seg"]["fid"]) / 2)
    # the same images score near zero against themselves
    np.save(tmp_path / "same.npy", train)
    assert run_medmem("quality", tmp_path / "same.npy", tmp_path / "train.npz", tmp_path / "same.json", *weights)[0] == 0
    same = json.loads((tmp_path / "same.json").read_text())
    assert same["mean"]["fid"] < 1e-3 * ours["mean"]["fid"]


def _offline_env(tmp_path):
    # no cached weights, and any download attempt fails at once, with or without internet
    return {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home"), "HTTPS_PROXY": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9"}


def test_without_weights_auto_records_not_computed_and_required_fails(tmp_path, monkeypatch):
    import subprocess
    import sys

    np.save(tmp_path / "train.npy", _images(8, 0))
    np.save(tmp_path / "samples.npy", _images(6, 1))
    env = _offline_env(tmp_path)

    def medmem(*args):
        return subprocess.run([sys.executable, "-m", "medmem.cli", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)

    proc = medmem("features", tmp_path / "train.npy", tmp_path / "train.npz", "--inception", "auto")
    assert proc.returncode == 0, proc.stderr
    proc = medmem("quality", tmp_path / "samples.npy", tmp_path / "train.npz", tmp_path / "q.json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "q.json").read_text())
    assert not record["computed"] and record["note"].startswith("not computed: Inception weights unavailable")
    assert record["channels"] == {} and record["n_samples"] == 6
    proc = medmem("features", tmp_path / "train.npy", tmp_path / "req.npz", "--inception", "required")
    assert proc.returncode == 2 and "not computed: Inception weights unavailable" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "req.npz").exists(), proc.stderr
    proc = medmem("features", tmp_path / "train.npy", tmp_path / "x.npz", "--weights", tmp_path / "missing.pth")
    assert proc.returncode == 2 and "missing.pth: Inception weights file not found" in proc.stderr


# --- FD and KID in the copy detector's feature space (offline) ---


def test_frechet_distance_of_a_shift_with_equal_covariance_is_the_squared_shift():
    """Gaussians with equal covariance: FD = ‖Δμ‖² (the trace terms cancel); identical sets: 0."""
    rng = np.random.default_rng(3)
    e = rng.normal(size=(400, 128)).astype(np.float32) @ rng.normal(size=(128, 128)).astype(np.float32) * 0.1
    delta = rng.normal(size=128) * 0.2
    mu, s = statistics(e)
    mu_shift, s_shift = statistics(e.astype(np.float64) + delta)
    np.testing.assert_allclose(s_shift, s, atol=1e-9)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0, abs=1e-8 * np.trace(s))
    assert frechet_distance(mu, s, mu_shift, s_shift) == pytest.approx(delta @ delta, rel=1e-6)


def _prepared(folder, images):
    from medmem.data.writer import DatasetWriter

    writer = DatasetWriter(folder, ["t1", "seg"], 32, "brats", [])
    writer.add("train", images, [{"subject": f"s{i // 4}", "slice": i % 4} for i in range(len(images))])
    writer.commit()
    return folder / "train.npy"


def _unbiased_mmd2(x, y):
    """MMD² of equal-sized sets, kernel (x·y/d + 1)³, diagonal terms left out within each set (Bińkowski et
    al. 2018, eq. 3 with their KID kernel), written out here as the reference."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / m**2


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A prepared 2-channel dataset (24 images) and a copy detector trained briefly on it (dim 16)."""
    from medmem.detector.run import run_train

    root = tmp_path_factory.mktemp("encoder")
    train = _prepared(root / "toy", _images(24, 0))
    run_train(train, root / "detector.pt", steps=3, batch=8, width=8, dim=16, device="cpu", progress=False)
    return train, root / "detector.pt"


def test_encoder_fd_and_kid_against_references(detector, tmp_path):
    from medmem.detector.model import embed, load_detector
    from medmem.io import open_image_shards
    from medmem.quality.run import encoder_quality

    train_path, weights = detector
    train = np.load(train_path)
    model, _ = load_detector(weights)
    assert model.config["channels"] == 2  # the encoder sees both channels at once
    same = encoder_quality(train, weights, train_path)
    assert same["computed"] and same["n_samples"] == same["n_train"] == 24
    assert same["feature_space"] == "copy-detector encoder of toy (dim 16)"
    e_train = embed(model, train)
    assert same["fd"] == pytest.approx(0, abs=1e-6 * np.trace(np.cov(e_train, rowvar=False)))
    shifted = _images(24, 1, shift=90)
    got = encoder_quality(shifted, weights, train_path, kid_subsets=5)
    e_shift = embed(model, shifted)
    reference = scipy_frechet(*statistics(e_shift), *statistics(e_train))
    assert got["fd"] == pytest.approx(reference, rel=1e-5) and got["fd"] > 1e3 * abs(same["fd"]) + 1e-3
    # subsets of all 24 images: every subset is the whole set, so KID is the full unbiased MMD² and its std 0
    assert got["kid_subset_size"] == 24 and got["kid_std"] <= 1e-3 * abs(got["kid_mean"])  # float32 sums
    assert got["kid_mean"] == pytest.approx(_unbiased_mmd2(e_shift, e_train), rel=1e-3) and got["kid_mean"] > 0
    assert set(got) >= {"fd", "kid_mean", "kid_std", "kid_subset_size", "weights", "feature_space"}
    np.save(tmp_path / "a.npy", shifted[:10])  # a set's shards read as one (batches across the boundary)
    np.save(tmp_path / "b.npy", shifted[10:])
    shards = open_image_shards([tmp_path / "a.npy", tmp_path / "b.npy"])
    assert encoder_quality(shards, weights, train_path, kid_subsets=5)["fd"] == pytest.approx(got["fd"], rel=1e-9)
    assert not {"fid", "is_mean"} & set(got)


def test_encoder_figures_offline_beside_inception_not_computed(tmp_path, detector):
    """Offline: Inception figures stay "not computed" while the encoder's are numbers; without --encoder the
    JSON says so; bad combinations are one-line errors (exit 2) with no output written."""
    import subprocess
    import sys

    train_path, weights = detector
    np.save(tmp_path / "samples.npy", _images(6, 1, shift=60))
    env = _offline_env(tmp_path)

    def medmem(*args):
        return subprocess.run([sys.executable, "-m", "medmem.cli", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)

    assert medmem("features", train_path, tmp_path / "train.npz").returncode == 0
    proc = medmem("quality", tmp_path / "samples.npy", tmp_path / "train.npz", tmp_path / "q.json",
                  "--encoder", weights, "--train", train_path, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "q.json").read_text())
    assert not record["computed"] and record["note"].startswith("not computed: Inception weights unavailable")
    assert record["channels"] == {} and record["mean"] == {}
    enc = record["encoder"]
    assert enc["computed"] and enc["n_samples"] == 6 and enc["n_train"] == 24 and enc["kid_subset_size"] == 6
    assert isinstance(enc["fd"], float) and enc["fd"] > 0 and isinstance(enc["kid_mean"], float)
    assert enc["feature_space"] == "copy-detector encoder of toy (dim 16)" and enc["weights"] == str(weights)
    proc = medmem("quality", tmp_path / "samples.npy", tmp_path / "train.npz", tmp_path / "off.json")
    assert proc.returncode == 0, proc.stderr
    off = json.loads((tmp_path / "off.json").read_text())["encoder"]
    assert off["computed"] is False and off["note"].startswith("not computed: no copy detector given")
    proc = medmem("quality", tmp_path / "samples.npy", tmp_path / "train.npz", tmp_path / "bad.json",
                  "--encoder", weights)
    assert proc.returncode == 2 and "--encoder and --train go together" in proc.stderr
    other = _prepared(tmp_path / "other", _images(12, 5))  # another training set: another fingerprint
    proc = medmem("quality", tmp_path / "samples.npy", tmp_path / "train.npz", tmp_path / "bad.json",
                  "--encoder", weights, "--train", other)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "detector.pt: the detector was trained on another training set" in proc.stderr
    assert not (tmp_path / "bad.json").exists()
