import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import run_medmem
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medmem.data.cxr import dicom_to_uint8, kermany_patient, prepare_cxr, resize_square, window_linear


def test_dicom_linear_window_hand_values():
    # centre 40, width 400: the window spans (-160, 239]; the centre - 0.5 maps to mid-grey
    out = window_linear(np.array([-1000.0, -160.0, 39.5, 239.0, 240.0]), 40, 400)
    np.testing.assert_allclose(out, [0, 0, 127.5, 255 * (0.5 + 199.5 / 399), 255])


def test_window_matches_pydicom_on_its_mr_test_file():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))  # WindowCenter 600, WindowWidth 1600
    ours = dicom_to_uint8(ds, "MR_small.dcm").astype(float)
    theirs = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(float)
    lo, hi = -(2 ** 15), 2 ** 15 - 1  # pydicom maps a signed 16-bit window onto the full output range
    np.testing.assert_allclose(ours, (theirs - lo) / (hi - lo) * 255, atol=0.51)


def test_rescale_is_applied_before_the_full_range_mapping():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # slope 1, intercept -1024, no window
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.floor((hu - hu.min()) / (hu.max() - hu.min()) * 255 + 0.5)
    np.testing.assert_array_equal(dicom_to_uint8(ds, "CT_small.dcm"), expected)
    ds.RescaleSlope = 2  # a wider value range changes nothing after full-range mapping...
    ds.WindowCenter, ds.WindowWidth = 0, 200  # ...but a window is read on rescaled values
    values = ds.pixel_array.astype(float) * 2 - 1024
    expected = np.floor(window_linear(values, 0, 200) + 0.5)
    np.testing.assert_array_equal(dicom_to_uint8(ds, "CT_small.dcm"), expected)


def test_monochrome1_is_inverted():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    m2 = dicom_to_uint8(ds, "x").astype(int)
    ds.PhotometricInterpretation = "MONOCHROME1"
    m1 = dicom_to_uint8(ds, "x").astype(int)
    # 255 - x before rounding: equal to 255 - rounded x except at exact halves
    assert np.abs(m1 - (255 - m2)).max() <= 1 and np.mean(m1 == 255 - m2) > 0.99
    assert m1.mean() > 128 > m2.mean()


def test_resize_keeps_aspect_and_centre_crops():
    image = np.zeros((100, 200), np.uint8)
    image[:, 50:150] = 255  # the central square
    out = resize_square(image, 50)
    assert out.shape == (50, 50) and out.min() > 240  # only the central square survives


def test_kermany_patient_ids():
    assert kermany_patient(Path("person1234_virus_2079.jpeg")) == kermany_patient(Path("person1234_bacteria_3.jpeg"))
    assert kermany_patient(Path("IM-0115-0001.jpeg")) == kermany_patient(Path("IM-0115-0002.jpeg"))
    assert kermany_patient(Path("NORMAL2-IM-0115-0001.jpeg")) != kermany_patient(Path("IM-0115-0001.jpeg"))


def test_no_patient_on_both_sides_and_labels_kept(tmp_path):
    root = tmp_path / "chest_xray"
    rng = np.random.default_rng(0)
    expected_label = {}
    for person in range(1, 13):
        label = "PNEUMONIA" if person % 2 else "NORMAL"
        folder = root / ["train", "test", "val"][person % 3] / label
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(1 + person % 3):
            name = f"person{person}_virus_{k}.jpeg" if label == "PNEUMONIA" else f"IM-{person:04d}-{k:04d}.jpeg"
            Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(folder / name)
        expected_label[person] = (label, 1 + person % 3)
    info = prepare_cxr(root, tmp_path / "out", holdout_fraction=0.25, seed=1, size=32)
    slices = pd.read_csv(tmp_path / "out" / "slices.csv")
    assert slices.groupby("subject")["split"].nunique().max() == 1
    assert slices.subject.nunique() == 12  # one pseudonym per patient, not per file
    assert sorted(slices.groupby("subject").size()) == sorted(n for _, n in expected_label.values())
    assert slices.groupby("subject")["label"].nunique().max() == 1
    assert info["subjects"] == {"train": 9, "holdout": 3}
    assert np.load(tmp_path / "out" / "train.npy").shape == (info["images"]["train"], 1, 32, 32)
    assert slices["slice"].isna().all()


def _identifiers(phantom_dir: Path) -> set[str]:
    ids = set()
    for path in phantom_dir.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ids |= {str(ds.PatientName), str(ds.PatientName).split("^")[-1], ds.PatientID, ds.PatientBirthDate, path.stem}
    return ids


def test_no_identifier_leaves_the_dicom(tmp_path, cxr_phantom_dir):
    identifiers = _identifiers(cxr_phantom_dir)
    assert len(identifiers) > 5
    out = tmp_path / "out"
    code, _, err = run_medmem("prepare", "cxr", cxr_phantom_dir, out, "--size", 32)
    assert code == 0, err
    slices = pd.read_csv(out / "slices.csv")
    assert all(re.fullmatch(r"cxr\d{5}", s) for s in slices.subject)
    for path in out.rglob("*"):
        blob = path.read_bytes()
        for ident in identifiers:
            assert ident.encode() not in blob, f"{ident} found in {path.name}"


def test_phantom_cxr_has_both_formats_and_both_photometrics(cxr_phantom_dir):
    dicoms = list(cxr_phantom_dir.rglob("*.dcm"))
    jpegs = list(cxr_phantom_dir.rglob("*.jpeg"))
    assert dicoms and jpegs
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicoms]
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {int(h.BitsStored) for h in headers} <= {12, 14, 16}
    assert {p.parent.name for p in jpegs} == {"NORMAL", "PNEUMONIA"}


def test_monochrome1_and_2_phantoms_present_the_same_way(cxr_phantom_dir, tmp_path):
    # every prepared radiograph shows bright bone: spine column brighter than the lung fields
    prepare_cxr(cxr_phantom_dir, tmp_path, holdout_fraction=0.0, size=64)
    images = np.load(tmp_path / "train.npy")[:, 0].astype(float)
    centre = images[:, 20:44, 29:35].mean(axis=(1, 2))
    lungs = images[:, 20:44, 10:20].mean(axis=(1, 2))
    assert (centre > lungs + 20).all()


@pytest.mark.parametrize("case", ["not_a_jpeg", "no_pixels", "empty"])
def test_bad_cxr_input(tmp_path, case, cxr_phantom_dir):
    import shutil

    root = tmp_path / "in"
    if case == "empty":
        root.mkdir()
        bad_name = str(root)
    else:
        shutil.copytree(cxr_phantom_dir, root)
        if case == "not_a_jpeg":
            bad = root / "kermany" / "train" / "NORMAL" / "IM-9999-0001.jpeg"
            bad.write_text("<html>not an image</html>")
            bad_name, problem = bad.name, "not a readable image"
        else:
            source = next(root.rglob("*.dcm"))
            ds = pydicom.dcmread(source)
            del ds.PixelData
            ds.save_as(source)
            bad_name, problem = source.name, "no pixel data"
    out = tmp_path / "out"
    code, _, err = run_medmem("prepare", "cxr", root, out, "--size", 16)
    assert code == 2 and bad_name in err and len(err.strip().splitlines()[-1:]) == 1
    assert not out.exists() or not any(out.iterdir())
    if case != "empty":
        assert problem in err
        code, _, err = run_medmem("prepare", "cxr", root, out, "--size", 16, "--skip-bad")
        assert code == 0
        skipped = pd.read_csv(out / "skipped.csv")
        assert len(skipped) == 1 and problem in skipped.reason[0] and bad_name not in skipped.reason[0]
