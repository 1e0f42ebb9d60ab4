import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_medmem, simple_volumes, write_subject

from medmem.data.brats import prepare_brats, process_subject


def boundary_volumes():
    """20×20×4 volumes on a 24×24 canvas (576 pixels; 15 % is 86.4 pixels).

    T1 (float, max 256, so scaled = v * 255/256 exactly):
      z=0: 87 pixels at 64 (scaled 63.75)  -> 87/576 = 15.10 %  kept
      z=1: 86 pixels at 64                 -> 86/576 = 14.93 %  dropped
      z=2: 90 pixels at 50.4 (scaled 50.2) -> above 50 before rounding, 50 after: kept
      z=3: 90 pixels at 50.0 (scaled 49.8) -> dropped; holds the maximum 256
    """
    t1 = np.zeros((20, 20, 4), np.float32)
    t1.reshape(-1, 4)[:87, 0] = 64
    t1.reshape(-1, 4)[:86, 1] = 64
    t1.reshape(-1, 4)[:90, 2] = 50.4
    t1.reshape(-1, 4)[:90, 3] = 50.0
    t1[19, 19, 3] = 256
    t2 = np.zeros((20, 20, 4), np.int16)
    t2[0, 0, :] = 1000  # max 1000
    t2[1, 0, :] = 2  # 0.51 -> 1
    t2[2, 0, :] = 1  # 0.255 -> 0
    t2[3, 0, :] = 998  # 254.49 -> 254
    t2[4, 0, :] = 999  # 254.745 -> 255
    flair = np.full((20, 20, 4), 7, np.int16)  # constant: scaled to 255 everywhere
    t1ce = np.zeros((20, 20, 4), np.int16)
    t1ce[5, 6, :] = 510
    t1ce[5, 7, :] = 5  # 5/510*255 = 2.5 in exact arithmetic
    seg = np.zeros((20, 20, 4), np.uint8)
    seg[0, 1, :], seg[0, 2, :], seg[0, 3, :] = 1, 2, 4
    return {"t1": t1, "t2": t2, "flair": flair, "t1ce": t1ce, "seg": seg}


def test_slice_rule_boundary_scaling_rounding_padding_and_channel_order(tmp_path):
    folder = write_subject(tmp_path, "BraTS20_Training_001", boundary_volumes())
    result = process_subject(folder, size=24)
    assert result.slices.tolist() == [0, 2]
    np.testing.assert_allclose(result.coverage, [87 / 576, 90 / 576])
    images = result.images
    assert images.shape == (2, 5, 24, 24) and images.dtype == np.uint8
    t1, t2, flair, t1ce, seg = (images[:, c] for c in range(5))
    # padding: 2 pixels on every side, the slice is volume[:, :, z] (rows = first axis)
    assert not t1[:, :2].any() and not t1[:, 22:].any() and not t1[:, :, :2].any()
    assert t1[0, 2, 2] == 64 and t1[0, 2, 2] == round(63.75)
    assert t1[1, 2, 2] == 50  # 50.2 -> 50, the slice was still kept
    assert t2[0, 2:7, 2].tolist() == [255, 1, 0, 254, 255]
    assert (flair[:, 2:22, 2:22] == 255).all() and not flair[:, :2].any()
    expected_t1ce = int(np.floor(5 / 510 * 255 + 0.5))  # 2 or 3 depending on float64 rounding of 2.5
    assert t1ce[0, 7, 9] == expected_t1ce and t1ce[0, 7, 8] == 255
    assert seg[0, 2, 2:6].tolist() == [0, 51, 102, 204]


def test_nii_and_nii_gz_give_identical_bytes(tmp_path):
    volumes = simple_volumes()
    a = process_subject(write_subject(tmp_path / "a", "S1", volumes, gz=True), 24)
    b = process_subject(write_subject(tmp_path / "b", "S1", volumes, gz=False), 24)
    np.testing.assert_array_equal(a.images, b.images)
    assert list((tmp_path / "b" / "S1").iterdir())[0].suffix == ".nii"


def test_differently_named_segmentation_as_in_brats20_subject_355(tmp_path):
    volumes = simple_volumes()
    name = "BraTS20_Training_355"
    odd = write_subject(tmp_path / "odd", name, volumes, gz=False, rename={"seg": "W39_1998.09.19_Segm.nii"})
    normal = write_subject(tmp_path / "normal", name, volumes, gz=False)
    np.testing.assert_array_equal(process_subject(odd, 24).images, process_subject(normal, 24).images)


def test_other_in_plane_sizes_are_centred_by_pad_or_crop(tmp_path):
    volumes = {m: np.pad(v, ((1, 1), (0, 0), (0, 0)))[:, :, :] for m, v in simple_volumes((18, 22, 4)).items()}
    for mod in ("t1", "t1ce", "t2", "flair"):
        volumes[mod][:, :, :] = np.maximum(volumes[mod], 300)
    result = process_subject(write_subject(tmp_path, "S1", volumes), 20)  # 20×22 -> rows as is, crop 1+1 columns
    assert result.images.shape == (4, 5, 20, 20)
    t1 = volumes["t1"].astype(np.float64)
    expected = np.floor(t1[:, 1:21, 0] / t1.max() * 255 + 0.5)
    np.testing.assert_array_equal(result.images[0, 0], expected)


def make_dataset(root: Path, names, shape=(4, 4, 2)):
    full = {m: np.full(shape, 200, np.int16) for m in ("t1", "t1ce", "t2", "flair")}
    full["seg"] = np.zeros(shape, np.uint8)
    for name in names:
        write_subject(root, name, full, gz=False)


def test_the_study_order_file_reproduces_the_study_split(tmp_path):
    order = pd.read_csv(REPO / "config" / "brats20_subject_order.csv")
    make_dataset(tmp_path / "in", list(order["subject"]) + ["BraTS20_Training_999"])
    info = prepare_brats(tmp_path / "in", tmp_path / "out", subject_order=REPO / "config" / "brats20_subject_order.csv",
                         size=8, workers=2)
    slices = pd.read_csv(tmp_path / "out" / "slices.csv")
    train = slices[slices.split == "train"].drop_duplicates("subject")["subject"].tolist()
    holdout = slices[slices.split == "holdout"].drop_duplicates("subject")["subject"].tolist()
    assert train == order["subject"][:313].tolist() and holdout == order["subject"][313:].tolist()
    assert len(holdout) == 56 and "BraTS20_Training_999" not in set(slices.subject)
    assert info["subjects"] == {"train": 313, "holdout": 56}
    assert np.load(tmp_path / "out" / "train.npy", mmap_mode="r").shape == (313 * 2, 5, 8, 8)


def test_order_file_subject_missing_from_input_is_an_error(tmp_path):
    make_dataset(tmp_path / "in", ["A", "B"])
    order = tmp_path / "order.csv"
    order.write_text("position,subject,split\n1,A,train\n2,C,holdout\n")
    code, _, err = run_medmem("prepare", "brats", tmp_path / "in", tmp_path / "out", "--subject-order", order, "--size", 8)
    assert code != 0 and "C" in err and "order.csv" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_seeded_split_is_deterministic_and_disjoint(tmp_path):
    names = [f"BraTS2021_{i:05d}" for i in range(10)]
    make_dataset(tmp_path / "in", names)
    subjects = []
    for run in ("a", "b"):
        prepare_brats(tmp_path / "in", tmp_path / run, n_train=6, n_holdout=3, seed=4, size=8)
        s = pd.read_csv(tmp_path / run / "slices.csv")
        subjects.append({split: list(dict.fromkeys(s[s.split == split].subject)) for split in ("train", "holdout")})
    assert subjects[0] == subjects[1]
    assert len(subjects[0]["train"]) == 6 and len(subjects[0]["holdout"]) == 3
    assert not set(subjects[0]["train"]) & set(subjects[0]["holdout"])
    prepare_brats(tmp_path / "in", tmp_path / "c", n_train=6, n_holdout=3, seed=5, size=8)
    s = pd.read_csv(tmp_path / "c" / "slices.csv")
    assert list(dict.fromkeys(s[s.split == "train"].subject)) != subjects[0]["train"]


def test_outputs_are_memory_mappable_and_slices_csv_indexes_them(tmp_path, brats_phantom_dir):
    info = prepare_brats(brats_phantom_dir, tmp_path, n_train=4, n_holdout=1, size=64, workers=2)
    slices = pd.read_csv(tmp_path / "slices.csv")
    assert list(slices.columns[:5]) == ["split", "index", "subject", "slice", "t1_coverage"]
    for split in ("train", "holdout"):
        arr = np.load(tmp_path / f"{split}.npy", mmap_mode="r")
        rows = slices[slices.split == split]
        assert arr.shape == (len(rows), 5, 64, 64) and arr.dtype == np.uint8
        assert rows["index"].tolist() == list(range(len(rows)))
        assert info["images"][split] == len(rows)
    assert (slices.t1_coverage > 0.15).all()
    # a realistic share of slices passes the brain-coverage rule (BraTS: roughly half to two thirds)
    share = len(slices) / (5 * 39)
    assert 0.35 < share < 0.8


# --- bad input: one line naming the file and the problem, non-zero exit, no partial output ---

def _bad_case(tmp_path, case):
    root = tmp_path / "in"
    volumes = simple_volumes()
    write_subject(root, "S0", volumes)
    bad = root / "S1"
    if case == "missing_modality":
        write_subject(root, "S1", {k: v for k, v in volumes.items() if k != "flair"})
        return "S1", "missing modality flair"
    if case == "truncated":
        write_subject(root, "S1", volumes)
        f = bad / "S1_t2.nii.gz"
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
        return "S1_t2.nii.gz", "cannot read NIfTI"
    if case == "corrupt":
        write_subject(root, "S1", volumes)
        (bad / "S1_t1ce.nii.gz").write_bytes(gzip.compress(b"this is not a nifti file" * 20))
        return "S1_t1ce.nii.gz", "cannot read NIfTI"
    if case == "shapes":
        v = dict(volumes)
        v["t2"] = np.zeros((20, 20, 5), np.int16) + 3
        write_subject(root, "S1", v)
        return "S1", "differ in shape"
    if case == "nan":
        v = dict(volumes)
        v["flair"] = volumes["flair"].astype(np.float32)
        v["flair"][3, 3, 1] = np.nan
        write_subject(root, "S1", v)
        return "S1_flair.nii.gz", "NaN"
    if case == "all_zero":
        v = dict(volumes)
        v["t1ce"] = np.zeros_like(volumes["t1ce"])
        write_subject(root, "S1", v)
        return "S1_t1ce.nii.gz", "maximum intensity is 0"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["missing_modality", "truncated", "corrupt", "shapes", "nan", "all_zero"])
def test_bad_subject_fails_cleanly_or_is_skipped(tmp_path, case):
    name, problem = _bad_case(tmp_path, case)
    out = tmp_path / "out"
    code, _, err = run_medmem("prepare", "brats", tmp_path / "in", out, "--train", 2, "--holdout", 0, "--size", 24)
    lines = err.strip().splitlines()
    assert code == 2 and name in lines[-1] and problem in lines[-1] and lines[-1].startswith("medmem: error:")
    assert not out.exists() or not any(out.iterdir()), "no partial output"

    code, _, err = run_medmem("prepare", "brats", tmp_path / "in", out, "--train", 2, "--holdout", 0, "--size", 24,
                              "--skip-bad")
    assert code == 0, err
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["subject"].tolist() == ["S1"] and problem in skipped["reason"][0]
    assert set(pd.read_csv(out / "slices.csv")["subject"]) == {"S0"}
    assert "skipped S1" in err


@pytest.mark.parametrize("case", ["empty", "missing", "wrong"])
def test_empty_missing_or_wrong_input_folder(tmp_path, case):
    folder = tmp_path / "in"
    if case == "empty":
        folder.mkdir()
    if case == "wrong":
        (folder / "notes").mkdir(parents=True)
        (folder / "notes" / "readme.txt").write_text("no images here")
    code, _, err = run_medmem("prepare", "brats", folder, tmp_path / "out", "--train", 1)
    assert code == 2 and str(folder) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --- NIfTI as nibabel reads it: every variant gives the array of nibabel.load(...).get_fdata() ---

def _reference_images(folder: Path, size: int) -> np.ndarray:
    """The study's rule written out plainly on nibabel's get_fdata() arrays (independent of medmem's reader)."""
    vols = {}
    for path in sorted(folder.iterdir()):
        mod = path.name.split("_")[-1].split(".")[0]
        vols[mod] = nib.load(path).get_fdata()
    t1 = vols["t1"] / vols["t1"].max() * 255
    pad = (size - t1.shape[0]) // 2
    keep = [z for z in range(t1.shape[2]) if np.count_nonzero(t1[:, :, z] > 50) / size ** 2 > 0.15]
    out = np.zeros((len(keep), 5, size, size), np.uint8)
    for c, mod in enumerate(["t1", "t2", "flair", "t1ce", "seg"]):
        v = vols[mod] * 255 / 5 if mod == "seg" else vols[mod] / vols[mod].max() * 255
        for i, z in enumerate(keep):
            out[i, c, pad:pad + v.shape[0], pad:pad + v.shape[1]] = np.clip(np.floor(v[:, :, z] + 0.5), 0, 255)
    return out


def _multi_member_gzip(raw: bytes, chunk: int) -> bytes:
    """A .gz of several concatenated gzip members, as block-parallel compressors (pigz -i, bgzip) write."""
    return b"".join(gzip.compress(raw[i:i + chunk]) for i in range(0, len(raw), chunk))


@pytest.mark.parametrize("variant", ["nii", "gz", "multi_member_gz", "nifti2_gz", "nifti2_nii", "scaled_gz"])
def test_every_nifti_variant_nibabel_reads_gives_its_get_fdata_values(tmp_path, variant):
    volumes = simple_volumes((20, 20, 6), seed=3)
    volumes["t1"][:, :, [0, 3]] = 0  # slices 0 and 3 are dropped by the coverage rule
    folder = tmp_path / "S1"
    folder.mkdir()
    for mod, data in volumes.items():
        klass = nib.Nifti2Image if variant.startswith("nifti2") else nib.Nifti1Image
        image = klass(data, np.eye(4))
        path = folder / f"S1_{mod}.nii{'' if variant in ('nii', 'nifti2_nii') else '.gz'}"
        if variant == "multi_member_gz":
            path.write_bytes(_multi_member_gzip(image.to_bytes(), 1000))
        elif variant == "scaled_gz" and mod != "seg":  # stored raw r, read as 0.37 r - 2.5
            header = image.header
            header.set_data_dtype(np.int16)
            header["vox_offset"], header["scl_slope"], header["scl_inter"] = 352, 0.37, -2.5
            path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + data.astype("<i2").tobytes("F")))
        else:
            nib.save(image, path)
    if variant == "multi_member_gz":
        assert gzip.decompress(path.read_bytes()) and path.read_bytes().count(b"\x1f\x8b\x08") > 1
    if variant == "scaled_gz":
        scaled = nib.load(folder / "S1_t2.nii.gz").get_fdata()
        np.testing.assert_allclose(scaled, volumes["t2"] * 0.37 - 2.5, rtol=1e-6)
    result = process_subject(folder, size=24)
    expected = _reference_images(folder, 24)
    assert len(expected) >= 2 and len(expected) < 6
    np.testing.assert_array_equal(result.images, expected)


def test_multi_member_and_nifti2_files_read_as_the_plain_nii(tmp_path):
    volumes = simple_volumes((20, 20, 4), seed=1)
    plain = process_subject(write_subject(tmp_path / "plain", "S1", volumes, gz=False), 24).images
    folder = tmp_path / "odd" / "S1"
    folder.mkdir(parents=True)
    for i, (mod, data) in enumerate(volumes.items()):
        klass = nib.Nifti2Image if i % 2 else nib.Nifti1Image
        (folder / f"S1_{mod}.nii.gz").write_bytes(_multi_member_gzip(klass(data, np.eye(4)).to_bytes(), 777))
    np.testing.assert_array_equal(process_subject(folder, 24).images, plain)


# --- operating-system debris: ignored wherever a folder is scanned; messages name the real files ---

def test_macos_and_windows_debris_is_ignored(tmp_path):
    volumes = simple_volumes()
    clean = tmp_path / "clean"
    write_subject(clean, "S0", volumes)
    write_subject(clean, "S1", simple_volumes(seed=1))
    messy = tmp_path / "messy"
    shutil.copytree(clean, messy)
    for subject in ("S0", "S1"):
        for path in list((messy / subject).iterdir()):
            (path.parent / f"._{path.name}").write_bytes(b"\0\5\26\7" + b"\0" * 80)  # AppleDouble companion
        (messy / subject / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (messy / subject / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (messy / subject / "desktop.ini").write_text("[.ShellClassInfo]\n")
    write_subject(messy / "__MACOSX", "S2", volumes)  # a zip's resource folder, NIfTI names inside
    write_subject(messy, ".hidden_subject", volumes)
    code, _, err = run_medmem("prepare", "brats", messy, tmp_path / "out_messy", "--train", 2, "--size", 24)
    assert code == 0, err
    prepare_brats(clean, tmp_path / "out_clean", n_train=2, n_holdout=0, size=24)
    for name in ("train.npy", "slices.csv"):
        assert (tmp_path / "out_messy" / name).read_bytes() == (tmp_path / "out_clean" / name).read_bytes()


def test_colliding_files_are_named_as_they_are(tmp_path):
    volumes = simple_volumes()
    write_subject(tmp_path / "in", "BraTS2021_00042", volumes)
    folder = tmp_path / "in" / "BraTS2021_00042"
    shutil.copy(folder / "BraTS2021_00042_t1.nii.gz", folder / "BraTS2021_00042_T1.nii")
    code, _, err = run_medmem("prepare", "brats", tmp_path / "in", tmp_path / "out", "--train", 1, "--size", 24)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "several t1 files: BraTS2021_00042_T1.nii, BraTS2021_00042_t1.nii.gz" in line, err
    assert "<file>" not in err


# --- empty sets: no 0-image training file, no silently empty held-out split ---

def test_every_subject_skipped_is_an_error_not_an_empty_dataset(tmp_path):
    volumes = simple_volumes()
    for name in ("S0", "S1"):
        write_subject(tmp_path / "in", name, {k: v for k, v in volumes.items() if k != "t2"})
    out = tmp_path / "out"
    code, _, err = run_medmem("prepare", "brats", tmp_path / "in", out, "--train", 2, "--size", 24, "--skip-bad")
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("medmem: error:") and "training split is empty" in lines[-1], err
    assert str(tmp_path / "in") in lines[-1] and "2 skipped" in lines[-1]
    assert not out.exists() or not any(out.iterdir())


def test_a_requested_holdout_that_comes_out_empty_is_an_error(tmp_path):
    volumes = simple_volumes()
    for name in ("A", "B", "C"):
        write_subject(tmp_path / "in", name, volumes)
    # seed 0 puts one subject on the held-out side: break every subject but the training ones
    order = [sorted("ABC")[i] for i in np.random.default_rng(0).permutation(3)]
    (tmp_path / "in" / order[2] / f"{order[2]}_flair.nii.gz").unlink()
    out = tmp_path / "out"
    code, _, err = run_medmem("prepare", "brats", tmp_path / "in", out, "--train", 2, "--holdout", 1, "--size", 24,
                              "--skip-bad")
    assert code == 2 and "no held-out image is left (1 skipped" in err.strip().splitlines()[-1], err
    assert not out.exists() or not any(out.iterdir())
    code, _, err = run_medmem("prepare", "brats", tmp_path / "in", out, "--train", 2, "--holdout", 0, "--size", 24,
                              "--skip-bad")
    assert code == 0, err


def test_skipped_subjects_are_counted_in_dataset_json(tmp_path):
    volumes = simple_volumes()
    for name in ("S0", "S1", "S2"):
        write_subject(tmp_path / "in", name, volumes)
    (tmp_path / "in" / "S2" / "S2_seg.nii.gz").write_bytes(b"not gzip")
    info = prepare_brats(tmp_path / "in", tmp_path / "out", n_train=3, n_holdout=0, size=24, skip_bad=True)
    assert info["skipped_subjects"] == 1 and info["skipped_items"] == 1 and info["subjects"]["train"] == 2
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert skipped["subject"].tolist() == ["S2"] and "S2_seg.nii.gz" in skipped["reason"][0]
