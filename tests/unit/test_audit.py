"""medmem audit: every input format (files written here by code), exactness of r_max against
scipy.stats.pearsonr over the image files themselves, one-line errors, the report in Chromium."""

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from audit_images import STUDY_FOLDERS, anatomy, subject_names, write_study  # noqa: F401
from conftest import simple_volumes, write_subject
from PIL import Image
from scipy.stats import pearsonr

from medmem.audit.images import import_images, is_os_debris, parse_name, scan
from medmem.cli import main
from medmem.data import brats
from medmem.data.pixels import matlab_uint8


def read_png_channel(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    files = sorted(folder.glob("*.png"))
    return [f.name for f in files], [np.asarray(Image.open(f)).astype(np.float64) for f in files]


def test_the_audit_computes_every_view_the_workflow_does(study, tmp_path):
    """The added views, the learned detector (a few steps), robust planted copies and the combined verdict."""
    root, _, _ = study
    out = tmp_path / "out"
    assert main(["audit", str(root / "train"), str(root / "samples"), str(out), "--holdout", str(root / "holdout"),
                 "--device", "cpu", "--planted", "2", "--pairs", "1", "--detector-steps", "5"]) == 0
    views = set(pd.read_csv(out / "memorization.csv", dtype={"view": str})["view"])
    assert {"shift", "flip", "foreground", "detector", "all"} <= views
    detection = pd.read_csv(out / "calibration.csv", dtype={"view": str})
    assert "combined" in set(detection["view"])
    assert {"rotate_5deg", "crop_resize_90", "elastic"} <= set(detection["perturbation"])
    table = pd.read_csv(out / "memorization.csv", dtype={"view": str}).set_index(["view", "sample"])
    # sample 1 is training image 2 rolled by one pixel: the shift view undoes the roll (all but the wrapped
    # column), the study's whole-image view does not
    assert table.loc[("shift", "seed0001"), "r_max"] > 0.98 > table.loc[("all", "seed0001"), "r_max"]
    assert (out / "detector.pt").is_file()


def test_r_max_equals_pearsonr_over_the_image_files(study, audited):
    root, _, _ = study
    table = pd.read_csv(audited / "memorization.csv", dtype={"train_subject": str})
    assert {"sample", "channel_name", "r_max", "train_name"} <= set(table.columns)
    for folder, channel in (("T1", "t1"), ("FLAIR", "flair")):
        train_names, train_px = read_png_channel(root / "train" / folder)
        sample_names, sample_px = read_png_channel(root / "samples" / folder)
        mine = table[table["channel_name"] == channel].set_index("sample")
        assert len(mine) == len(sample_names)
        for name, px in zip(sample_names, sample_px):
            r = [pearsonr(px.ravel(), t.ravel())[0] for t in train_px]
            best = int(np.argmax(r))
            row = mine.loc[f"{folder}/{name}"]
            assert abs(row["r_max"] - r[best]) < 1e-12
            assert row["train_name"] == f"{folder}/{train_names[best]}"
    copy = table[(table["channel_name"] == "t1") & (table["sample"] == "T1/seed0000.png")].iloc[0]
    assert copy["r_max"] == pytest.approx(1.0) and copy["train_name"] == "T1/Subject_2_slice_41_t1.png"
    assert copy["train_subject"] == "2" and copy["train_slice"] == 41 and table["train_slice"].dtype.kind == "i"


def test_study_csv_layout_per_channel(audited):
    table = pd.read_csv(audited / "memorization.csv")
    for channel in ("t1", "flair"):
        study = pd.read_csv(audited / f"study_{channel}.csv")
        assert list(study.columns) == ["synthetic_name", "best_training_name", "max_corr"]
        mine = table[table["channel_name"] == channel]
        assert list(study["synthetic_name"]) == [Path(s).name for s in mine["sample"]]
        assert list(study["best_training_name"]) == [Path(s).name for s in mine["train_name"]]
        np.testing.assert_array_equal(study["max_corr"], mine["r_max"])
    from medmem.audit.run import _in_channel_folder

    assert _in_channel_folder("FLAIR/seed0001.png") == "seed0001.png"
    assert _in_channel_folder("BraTS2021_00003/slice_15") == "BraTS2021_00003/slice_15"  # the subject stays
    views = set(table["view"].astype(str))
    assert views == {"0", "1", "mr_mean", "all", "shift", "flip", "foreground"}  # no detector: --detector-steps 0


def test_verdict_counts_samples_above_the_holdout_p99(audited):
    verdict = pd.read_csv(audited / "verdict.csv", dtype={"view": str})
    baseline = pd.read_csv(audited / "holdout_baseline.csv", dtype={"view": str})
    table = pd.read_csv(audited / "memorization.csv", dtype={"view": str})
    for v in verdict.itertuples():
        p99 = baseline.set_index("view").loc[v.view, "p99"]
        r = table.loc[table["view"] == v.view, "r_max"].dropna()
        assert v.n_above == int((r >= p99).sum())
        top = baseline.set_index("view").loc[v.view, "max"]
        assert v.n_above_holdout_max == int((r > top).sum())
        matched = table.loc[(table["view"] == v.view) & table["r_max"].notna() & (table["train_index"] >= 0),
                            "train_index"]
        assert v.top_match_share == pytest.approx(matched.value_counts().max() / len(matched))
        assert v.matched_train_images == matched.nunique()
    t1 = verdict.set_index("view").loc["0"]
    assert t1["n_above_holdout_max"] == 2  # the exact copy and the copy shifted by one pixel
    assert (audited / "fingerprints.csv").is_file() and not list(audited.parent.glob(".out.tmp-*"))


def test_html_is_self_contained_and_plain(audited):
    page = (audited / "audit.html").read_text()
    assert "src=\"http" not in page and "href=\"http" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") == 4  # histogram, pairs per channel (2), sample grid
    for text in ("Verdict per channel", "What the measure cannot see", "SHA-256", "false alarm",
                 "t1: 2 sample(s) are closer to a training image than any real unseen patient"):
        assert text in page
    fingerprints = pd.read_csv(audited / "fingerprints.csv")
    import hashlib

    first = fingerprints.iloc[0]
    assert hashlib.sha256(Path(first["source"], first["file"]).read_bytes()).hexdigest() == first["sha256"]


def test_learned_samples_are_judged(audited):
    """The fixture's samples are new anatomy like the held-out images: judged, not "cannot judge"."""
    verdict = pd.read_csv(audited / "verdict.csv", dtype={"view": str}).set_index("view")
    assert verdict.loc["0", "verdict"] == "judged"
    assert verdict.loc["0", "verdict_text"].startswith(f"{verdict.loc['0', 'n_above']} of 6 samples")


def test_noise_samples_cannot_be_judged(study, tmp_path):
    """Noise samples (uniform grey levels) resemble no training image: the verdict says they cannot be
    judged, in verdict.csv and in the HTML, for every channel."""
    root, train, _ = study
    noise = np.random.default_rng(5).integers(0, 256, (8, *train.shape[1:]), dtype=np.uint8)
    write_study(tmp_path / "noise", noise, [f"seed{i:04d}" for i in range(len(noise))])
    out = tmp_path / "out"
    assert main(["audit", str(root / "train"), str(tmp_path / "noise"), str(out), "--holdout", str(root / "holdout"),
                 "--device", "cpu", "--planted", "2", "--pairs", "1", "--detector-steps", "0"]) == 0
    verdict = pd.read_csv(out / "verdict.csv", dtype={"view": str}).set_index("view")
    held = pd.read_parquet(out / "memorization" / "holdout.parquet")
    table = pd.read_csv(out / "memorization.csv", dtype={"view": str})
    for view in ("0", "1"):
        r = table.loc[table["view"] == view, "r_max"]
        h = held.loc[held["view"].astype(str) == view, "r_max"]
        assert r.median() < np.quantile(h, 0.05)  # the premise: noise sits below real unseen images
        assert verdict.loc[view, "verdict"] == "cannot judge"
        assert verdict.loc[view, "holdout_p05"] == pytest.approx(np.quantile(h, 0.05))
    page = (out / "audit.html").read_text()
    for name in ("t1", "flair"):
        assert f"<b>{name}: cannot judge: the samples do not yet look like real images.</b>" in page
    assert page.count("In short: cannot judge: samples do not yet look like real images (median r") == 2
    assert "no more samples resemble training images than real unseen patients" not in page


def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed")
def test_report_renders_in_headless_chromium(audited, tmp_path):
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = Path(audited) / "screenshot.png"
    run = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1200,2400",
                          (audited / "audit.html").as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.exists(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1200) and pixels.std() > 10
    dom = subprocess.run([*browser, "--dump-dom", (audited / "audit.html").as_uri()], capture_output=True, text=True,
                         timeout=180)
    assert "Verdict per channel" in dom.stdout and "closer to a training image than any real unseen" in dom.stdout


def test_without_holdout_says_the_baseline_is_missing(study, tmp_path):
    root, _, _ = study
    out = tmp_path / "out"
    assert main(["audit", str(root / "train"), str(root / "samples"), str(out), "--device", "cpu",
                 "--planted", "2", "--pairs", "1", "--channels", "T1", "--detector-steps", "0"]) == 0
    page = (out / "audit.html").read_text()
    assert "Baseline missing" in page and "no verdict" in page
    table = pd.read_csv(out / "memorization.csv")
    assert set(table["channel_name"]) == {"t1", "all", "shift", "flip", "foreground"}  # one channel: `all` is it
    assert (out / "study_t1.csv").is_file() and not (out / "study_flair.csv").exists()
    assert table["above_holdout_p99"].isna().all()


# --- formats ------------------------------------------------------------------------------------------

def _import(tmp_path, source, **kw):
    info = import_images(source, tmp_path / "o.npy", tmp_path / "o.csv", **kw)
    return np.load(tmp_path / "o.npy"), pd.read_csv(tmp_path / "o.csv", dtype={"subject": str}), info


@pytest.fixture
def pictures():
    images, keys = anatomy(2, 3, seed=3)
    return images[:, 0], subject_names(keys)


def test_flat_png_folder_with_debris(tmp_path, pictures):
    images, names = pictures
    folder = tmp_path / "flat"
    (folder / "__MACOSX").mkdir(parents=True)
    for img, name in zip(images, names):
        Image.fromarray(img).save(folder / f"{name}.png")
    (folder / "._Subject_1_slice_40.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "Thumbs.db").write_bytes(b"junk")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]")
    (folder / "__MACOSX" / "x.png").write_bytes(b"junk")
    got, table, _ = _import(tmp_path, folder)
    np.testing.assert_array_equal(got[:, 0], images)
    assert list(table["subject"]) == ["1", "1", "1", "2", "2", "2"] and list(table["slice"]) == [40, 41, 42] * 2
    assert list(table["name"]) == [f"{n}.png" for n in names]


@pytest.mark.parametrize("kind", ["rgb_png", "png16", "tif8", "tif16", "la_png"])
def test_pictures_8_16_bit_and_grey_rgb(tmp_path, pictures, kind):
    images, names = pictures
    folder = tmp_path / kind
    folder.mkdir()
    for img, name in zip(images, names):
        if kind == "rgb_png":
            Image.fromarray(np.stack([img] * 3, -1)).save(folder / f"{name}.png")
        elif kind == "la_png":
            Image.fromarray(np.stack([img, np.full_like(img, 255)], -1), "LA").save(folder / f"{name}.png")
        elif kind in ("png16", "tif16"):  # v × 257 spans 0..65535: the full-range rule gives v back
            Image.fromarray(img.astype(np.uint16) * 257).save(folder / f"{name}.{kind[:3]}")
        else:
            Image.fromarray(img).save(folder / f"{name}.tif")
    got, _, _ = _import(tmp_path, folder)
    np.testing.assert_array_equal(got[:, 0], images)


def test_16_bit_rule_is_the_images_full_range(tmp_path):
    img = np.array([[100, 1100], [2100, 4195]], np.uint16).repeat(4, 0).repeat(4, 1)  # 12-bit data in 16 bits
    Image.fromarray(img).save(tmp_path / "a.png")
    got, _, _ = _import(tmp_path, tmp_path / "a.png")
    expected = matlab_uint8((img.astype(float) - 100) / (4195 - 100) * 255)  # by hand: 0, 62.27→62, 124.54→125, 255
    np.testing.assert_array_equal(got[0, 0], expected)
    assert list(np.unique(got)) == [0, 62, 125, 255]


def test_jpeg_grey_and_colour(tmp_path, pictures):
    images, names = pictures
    folder = tmp_path / "jpeg"
    folder.mkdir()
    for img, name in zip(images, names):
        Image.fromarray(np.stack([img] * 3, -1)).save(folder / f"{name}.jpg", quality=95)
    got, _, _ = _import(tmp_path, folder)
    assert got.shape == images[:, None].shape
    assert np.abs(got[:, 0].astype(int) - images).mean() < 3  # lossy, but the same picture
    colour = np.stack([images[0], images[0] // 2, images[0]], -1)
    Image.fromarray(colour).save(folder / "Subject_1_slice_40.jpg")
    code, err = _cli_error(["audit", str(folder), str(folder), str(tmp_path / "out")])
    assert code == 2 and "Subject_1_slice_40.jpg: colour image" in err


@pytest.mark.parametrize("layout", ["npy_nchw", "npz_nhwc", "npy_nhw", "npz_nhwc_grey_rgb"])
def test_arrays(tmp_path, layout):
    images, _ = anatomy(2, 2, seed=4)  # (4, 2, 24, 24)
    if layout == "npy_nchw":
        np.save(tmp_path / "s.npy", images)
        expected, path = images, tmp_path / "s.npy"
    elif layout == "npz_nhwc":
        np.savez(tmp_path / "samples_4x24x24x2.npz", images.transpose(0, 2, 3, 1))
        expected, path = images, tmp_path / "samples_4x24x24x2.npz"
    elif layout == "npy_nhw":
        np.save(tmp_path / "s.npy", images[:, 0])
        expected, path = images[:, :1], tmp_path / "s.npy"
    else:  # guided-diffusion trained on grey images saved as RGB
        np.savez(tmp_path / "samples.npz", np.repeat(images[:, :1].transpose(0, 2, 3, 1), 3, axis=-1))
        expected, path = images[:, :1], tmp_path / "samples.npz"
    got, table, info = _import(tmp_path, path)
    np.testing.assert_array_equal(got, expected)
    from medmem.audit.images import _open_array

    assert isinstance(_open_array(path), np.memmap)  # np.savez stores uncompressed: mapped, not read whole
    assert table["name"].iloc[1] == f"{path.name}[1]"
    assert info.fingerprints["sha256"].iloc[0] and len(info.fingerprints) == 1


def test_dicom_files_read_as_prepare_cxr_reads_them(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(5)
    raw = rng.integers(0, 4096, (3, 20, 20)).astype(np.uint16)
    for i, px in enumerate(raw):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(tmp_path / f"im{i}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 20, 20, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.PixelData = px.tobytes()
        (tmp_path / "dcm").mkdir(exist_ok=True)
        ds.save_as(tmp_path / "dcm" / f"im{i}.dcm", enforce_file_format=True)
    got, _, _ = _import(tmp_path, tmp_path / "dcm")
    # DICOM's linear VOI function by hand: ((v - (c - 0.5)) / (w - 1) + 0.5) × 255, clipped
    expected = matlab_uint8(np.clip(((raw - 2047.5) / 4095 + 0.5) * 255, 0, 255))
    np.testing.assert_array_equal(got[:, 0], expected)
    assert pydicom.dcmread(tmp_path / "dcm" / "im0.dcm").WindowWidth == 4096


def test_nifti_subjects_as_prepare_brats_takes_them(tmp_path):
    write_subject(tmp_path / "brats", "BraTS2021_00001", simple_volumes(seed=1))
    write_subject(tmp_path / "brats", "BraTS2021_00002", simple_volumes(seed=2))
    got, table, info = _import(tmp_path, tmp_path / "brats", size=20)
    expected = np.concatenate([brats.process_subject(tmp_path / "brats" / s, 20).images
                               for s in ("BraTS2021_00001", "BraTS2021_00002")])
    np.testing.assert_array_equal(got, expected)
    assert info.channels == brats.CHANNELS and table["subject"].iloc[0] == "BraTS2021_00001"
    picked, _, info = _import(tmp_path, tmp_path / "brats", size=20, channels=["FLAIR", "t1"])
    np.testing.assert_array_equal(picked, expected[:, [2, 0]])  # medmem's order: t1, t2, flair, t1ce, seg
    assert info.channels == ["flair", "t1"]


def test_nifti_volume_files(tmp_path):
    volume = np.zeros((20, 20, 4), np.int16)
    volume[2:18, 2:18, 1:3] = np.arange(256).reshape(16, 16)[..., None] + 1  # slices 0 and 3 are empty
    (tmp_path / "vols").mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "vols" / "patient7.nii.gz")
    got, table, _ = _import(tmp_path, tmp_path / "vols", size=20)
    assert list(table["slice"]) == [1, 2] and list(table["subject"]) == ["patient7", "patient7"]
    expected = matlab_uint8(volume[:, :, 1].astype(float) / 256 * 255)  # by hand: volume[:, :, z], v / max × 255
    np.testing.assert_array_equal(got[0, 0], expected)


def test_workers_give_the_same_bytes(tmp_path, pictures):
    images, names = pictures
    folder = tmp_path / "flat"
    folder.mkdir()
    for img, name in zip(images, names):
        Image.fromarray(img).save(folder / f"{name}.png")
    one, _, _ = _import(tmp_path / "a", folder, workers=1)
    two, _, _ = _import(tmp_path / "b", folder, workers=2)
    np.testing.assert_array_equal(one, two)


def test_names_and_debris():
    assert parse_name("Subject_12_slice_40_t1") == ("12", 40)
    assert parse_name("BraTS2021_00001_slice72") == ("BraTS2021_00001", 72)
    assert parse_name("person3_bacteria_10") == ("person3", None)
    assert parse_name("seed0042") == (None, None)
    for junk in ("._a.png", ".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX/a.png"):
        assert is_os_debris(Path(junk))
    assert not is_os_debris(Path("T1/seed0001.png"))


# --- errors ---------------------------------------------------------------------------------------------

def _cli_error(argv):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    lines = [line for line in err.getvalue().splitlines() if line.startswith("medmem: error")]
    return code, lines[0] if lines else err.getvalue()


def _copy_study(study, tmp_path):
    root, _, _ = study
    shutil.copytree(root, tmp_path / "s")
    return tmp_path / "s"


def test_error_mismatched_size(study, tmp_path):
    root = _copy_study(study, tmp_path)
    bad = root / "samples" / "T1" / "seed0003.png"
    Image.fromarray(np.zeros((30, 24), np.uint8)).save(bad)
    code, err = _cli_error(["audit", str(root / "train"), str(root / "samples"), str(tmp_path / "out")])
    assert code == 2 and "seed0003" in err and "24×30" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_error_channel_missing_for_an_image(study, tmp_path):
    root = _copy_study(study, tmp_path)
    (root / "train" / "FLAIR" / "Subject_3_slice_42_flair.png").unlink()
    code, err = _cli_error(["audit", str(root / "train"), str(root / "samples"), str(tmp_path / "out")])
    assert code == 2 and "Subject_3_slice_42_t1.png: no matching image in FLAIR/" in err
    assert not (tmp_path / "out").exists()


def test_error_unreadable_file(study, tmp_path):
    root = _copy_study(study, tmp_path)
    (root / "holdout" / "T1" / "Subject_11_slice_41_t1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, err = _cli_error(["audit", str(root / "train"), str(root / "samples"), str(tmp_path / "out"),
                            "--holdout", str(root / "holdout")])
    assert code == 2 and "Subject_11_slice_41_t1.png: not a readable image" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_error_channels_and_layouts(study, tmp_path):
    root, _, _ = study
    code, err = _cli_error(["audit", str(root / "train"), str(root / "samples"), str(tmp_path / "o"),
                            "--channels", "T2"])
    assert code == 2 and "no channel t2 (it has t1, flair)" in err
    np.save(tmp_path / "cube.npy", np.zeros((2, 4, 4, 4), np.uint8))
    code, err = _cli_error(["audit", str(root / "train"), str(tmp_path / "cube.npy"), str(tmp_path / "o")])
    assert code == 2 and "cube.npy: cannot tell N×C×H×W from N×H×W×C" in err
    np.save(tmp_path / "f.npy", np.zeros((2, 2, 24, 24), np.float32))
    code, err = _cli_error(["audit", str(root / "train"), str(tmp_path / "f.npy"), str(tmp_path / "o")])
    assert code == 2 and "f.npy: expected uint8 images, got float32" in err
    assert scan(root / "samples").channels == ["t1", "flair"]


# --- in the workflow: a dataset whose source is such a folder ----------------------------------------

def test_prepare_images_holds_out_a_share_of_subjects(study, tmp_path):
    root, train, _ = study
    assert main(["prepare", "images", str(root / "train"), str(tmp_path / "d"), "--holdout-fraction", "0.25",
                 "--seed", "1", "--workers", "1"]) == 0
    slices = pd.read_csv(tmp_path / "d" / "slices.csv", dtype={"subject": str})
    held, kept = (set(slices.loc[slices["split"] == s, "subject"]) for s in ("holdout", "train"))
    assert len(held) == 1 and len(kept) == 3 and not held & kept  # 4 subjects: one held out, none on both sides
    images = np.load(tmp_path / "d" / "train.npy")
    names = slices.loc[slices["split"] == "train", "name"]
    order = subject_names(anatomy(4, 4, seed=0)[1])
    np.testing.assert_array_equal(images, train[[order.index(n) for n in names]])
    assert len(np.load(tmp_path / "d" / "holdout.npy")) == 4


def test_prepare_images_with_a_held_out_folder(study, tmp_path):
    root, _, _ = study
    assert main(["prepare", "images", str(root / "train"), str(tmp_path / "d"), "--holdout",
                 str(root / "holdout"), "--channels", "FLAIR"]) == 0
    info = __import__("json").loads((tmp_path / "d" / "dataset.json").read_text())
    assert info["channels"] == ["flair"] and info["images"] == {"train": 16, "holdout": 12}


@pytest.mark.parametrize("change, words", [
    ({"holdout_source": None}, "needs held-out images"),
    ({"split": {"holdout_fraction": 0.2}}, "give holdout_source or a holdout fraction"),
    ({"split": {"train": 3}}, "not used for kind images"),
    ({"source": "phantom"}, "has no phantom"),
])
def test_images_dataset_config_errors_name_the_key(study, change, words):
    import yaml
    from conftest import REPO

    from medmem.config import validate_config
    from medmem.errors import InputError

    root, _, _ = study
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    dataset = {"kind": "images", "source": str(root / "train"), "holdout_source": str(root / "holdout")}
    dataset.update(change)
    config["datasets"] = {"ext": {k: v for k, v in dataset.items() if v is not None}}
    with pytest.raises(InputError, match=words) as err:
        validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", REPO)
    assert "datasets.ext" in str(err.value)


def test_import_streams_in_bounded_blocks(tmp_path, monkeypatch, pictures):
    """Images reach the .npy a block at a time (never the whole set at once), under a temporary name."""
    from medmem.io import NpyWriter

    sizes, seen_final = [], []
    append = NpyWriter.append

    def recording(self, images):
        sizes.append(len(images))
        seen_final.append(self.path.exists())
        append(self, images)

    monkeypatch.setattr(NpyWriter, "append", recording)
    big = np.random.default_rng(0).integers(0, 256, (600, 1, 20, 20), dtype=np.uint8)
    np.save(tmp_path / "big.npy", big)
    got, _, _ = _import(tmp_path, tmp_path / "big.npy")
    np.testing.assert_array_equal(got, big)
    assert max(sizes) <= 256 and len(sizes) == 3 and not any(seen_final)
    images, names = pictures
    (tmp_path / "flat").mkdir()
    for img, name in zip(images, names):
        Image.fromarray(img).save(tmp_path / "flat" / f"{name}.png")
    sizes.clear()
    _import(tmp_path / "p", tmp_path / "flat", workers=2)
    assert sizes == [1] * len(images)




def test_a_concentrated_channel_says_so_in_the_html():
    """A judged channel whose samples crowd onto one training image gets the mode-collapse paragraph with
    its numbers; the same channel without it does not."""
    from medmem.audit.html import _verdict_html

    v = pd.Series({"channel_name": "T1", "n_above": 0, "n_defined": 100, "share_above": 0.0, "holdout_p99": 0.95,
                   "false_alarm": 0.01, "expected_by_chance": 1.0, "p_value": 1.0, "n_above_holdout_max": 0,
                   "holdout_max": 0.97, "r_max_max": 0.93, "verdict": "judged", "verdict_text": "0 of 100",
                   "top_match_share": 0.43, "holdout_top_match_share": 0.07, "matched_train_images": 8,
                   "concentrated": True})
    page = _verdict_html(v, True)
    assert "Also: 43.0 % of the samples have one and the same nearest training image" in page
    assert "at most 7.0 %" in page and "only 8 training images" in page and page.endswith("</div>")
    assert "Also:" not in _verdict_html(pd.concat([v.drop("concentrated"), pd.Series({"concentrated": False})]), True)
