import json
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


# --- patients: the naming schemes of the public sets; unknown patients stop the run or are opted in ---

def _picture(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48), dtype=np.uint8)).save(path)


def test_patient_keys_of_the_public_chest_xray_sets():
    from medmem.data.cxr import picture_patient

    same = [("NORMAL-1003233-0001.jpeg", "NORMAL-1003233-0002.jpeg"),  # Kermany v3 (Mendeley)
            ("BACTERIA-1008087-0001.jpeg", "VIRUS-1008087-0003.jpeg"),  # one patient number, two prefixes
            ("person1234_virus_2079.jpeg", "person1234_bacteria_3.jpeg"),  # the older Kaggle release
            ("IM-0115-0001.jpeg", "IM-0115-0002.jpeg"), ("NORMAL2-IM-0115-0001.jpeg", "normal2-im-0115-0007.jpeg"),
            ("00000001_000.png", "00000001_002.png")]  # NIH ChestX-ray14
    for a, b in same:
        assert picture_patient(Path(a)) is not None and picture_patient(Path(a)) == picture_patient(Path(b)), (a, b)
    different = [("NORMAL-1003233-0001.jpeg", "NORMAL-1003234-0001.jpeg"), ("00000001_000.png", "00000002_000.png"),
                 ("NORMAL2-IM-0115-0001.jpeg", "IM-0115-0001.jpeg"), ("person12_virus_1.jpeg", "person1_virus_2.jpeg")]
    for a, b in different:
        assert picture_patient(Path(a)) != picture_patient(Path(b)), (a, b)
    for unknown in ("scan_0001.jpeg", "IMG_2024.png", "chest.jpeg", "0001_000.png"):
        assert picture_patient(Path(unknown)) is None, unknown


def test_kermany_v3_and_nih_patients_stay_on_one_side(tmp_path):
    root = tmp_path / "in"
    images_of = {}
    for p in range(12):
        prefix = ["NORMAL", "BACTERIA", "VIRUS"][p % 3]
        names = [f"{prefix}-{1000000 + p}-{k:04d}.jpeg" for k in range(1, 2 + p % 3)]
        if p % 4 == 1:
            names.append(f"VIRUS-{1000000 + p}-0009.jpeg")  # the same patient under a second prefix
        folder = root / "train" / ("NORMAL" if prefix == "NORMAL" else "PNEUMONIA")
        for name in names:
            _picture(folder / name, p * 10 + len(name))
        images_of[f"v3-{p}"] = len(names)
    for p in range(1, 7):
        for k in range(p % 3 + 1):
            _picture(root / "nih" / "images" / f"{p:08d}_{k:03d}.png", 1000 + p * 10 + k)
        images_of[f"nih-{p}"] = p % 3 + 1
    _picture(root / "__MACOSX" / "train" / "NORMAL" / "NORMAL-1000000-0001.jpeg", 5)  # debris: not a patient
    info = prepare_cxr(root, tmp_path / "out", holdout_fraction=0.3, seed=2, size=16)
    slices = pd.read_csv(tmp_path / "out" / "slices.csv")
    assert slices.groupby("subject")["split"].nunique().max() == 1
    assert sorted(slices.groupby("subject").size()) == sorted(images_of.values())
    assert info["subjects"]["train"] + info["subjects"]["holdout"] == len(images_of) == 18
    assert info["split_level"] == "patient" and info["images_without_patient"] == 0


def _unknown_names_folder(root: Path) -> None:
    for p in range(4):
        _picture(root / "NORMAL" / f"IM-{p:04d}-0001.jpeg", p)
    for k in range(3):
        _picture(root / "NORMAL" / f"scan_{k}.jpeg", 10 + k)


def test_unknown_patients_stop_with_the_counts_unless_an_image_level_split_is_asked_for(tmp_path):
    root = tmp_path / "in"
    _unknown_names_folder(root)
    out = tmp_path / "out"
    code, _, err = run_medmem("prepare", "cxr", root, out, "--size", 16, "--holdout-fraction", 0.3)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("medmem: error:"), err
    assert "the patient of 3 of 7 images is unknown (3 file names in no known scheme, 0 DICOM" in lines[0]
    assert "scan_0.jpeg" in lines[0] and "--image-level-split" in lines[0]
    assert not out.exists()
    code, _, err = run_medmem("prepare", "cxr", root, out, "--size", 16, "--holdout-fraction", 0.3,
                              "--image-level-split")
    assert code == 0, err
    info = json.loads((out / "dataset.json").read_text())
    assert info["split_level"] == "image" and info["images_without_patient"] == 3
    assert info["subjects"]["train"] + info["subjects"]["holdout"] == 7
    # nothing held out: no split to straddle, so no stop (each unknown image is its own subject)
    code, _, err = run_medmem("prepare", "cxr", root, tmp_path / "out0", "--size", 16, "--holdout-fraction", 0)
    assert code == 0, err
    assert json.loads((tmp_path / "out0" / "dataset.json").read_text())["split_level"] == "patient"


def _dicom(path: Path, patient_id=None, **tags) -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    if patient_id is None:
        del ds.PatientID
    else:
        ds.PatientID = patient_id
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)


@pytest.mark.parametrize("case", ["absent", "empty", "constant"])
def test_dicom_without_usable_patient_ids_stops(tmp_path, case):
    root = tmp_path / "in"
    n = 12
    for i in range(n):
        patient = {"absent": None, "empty": "", "constant": "ANONYMOUS"}[case] if i >= 8 or case == "constant" \
            else f"FAKE{i}"
        _dicom(root / f"img{i:02d}.dcm", patient)
    code, _, err = run_medmem("prepare", "cxr", root, tmp_path / "out", "--size", 16)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(root) in lines[0], err
    if case == "constant":
        assert f"all {n} DICOM files have the same PatientID" in lines[0]
    else:
        assert "the patient of 4 of 12 images is unknown (0 file names in no known scheme, 4 DICOM files" in lines[0]
    assert not (tmp_path / "out").exists()
    code, _, err = run_medmem("prepare", "cxr", root, tmp_path / "out", "--size", 16, "--image-level-split")
    assert code == 0, err
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["images_without_patient"] == (n if case == "constant" else 4)


# --- DICOM windows that cannot be applied: treated as absent, with a warning naming the file ---

@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # the point of the test
@pytest.mark.parametrize("width", [0, -100, 0.5, "NaN", "inf"])
def test_unusable_window_falls_back_to_the_full_range_with_a_warning(width, caplog):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    plain = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del plain.WindowCenter, plain.WindowWidth
    values = plain.pixel_array.astype(float)
    expected = np.floor((values - values.min()) / (values.max() - values.min()) * 255 + 0.5)
    ds.WindowWidth = width
    with caplog.at_level("WARNING"):
        out = dicom_to_uint8(ds, "fake_patient_007.dcm")
    np.testing.assert_array_equal(out, expected)
    assert out.max() == 255 and out.min() == 0  # never a blank image
    assert "fake_patient_007.dcm: unusable VOI window" in caplog.text and "full range" in caplog.text


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # the point of the test
def test_an_unusable_first_window_gives_way_to_the_next(caplog):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = ["NaN", 500], [1600, 300]
    values = ds.pixel_array.astype(float)
    with caplog.at_level("WARNING"):
        out = dicom_to_uint8(ds, "x.dcm")
    np.testing.assert_array_equal(out, np.floor(window_linear(values, 500, 300) + 0.5))
    assert "next window (centre 500, width 300)" in caplog.text


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # the point of the test
def test_unusable_windows_through_the_command(tmp_path):
    root = tmp_path / "in"
    for i, width in enumerate([0, -1, 0.01, "NaN", 1600]):
        _dicom(root / f"fake{i}.dcm", f"FAKE{i}", WindowWidth=width)
    code, _, err = run_medmem("prepare", "cxr", root, tmp_path / "out", "--size", 16, "--holdout-fraction", 0.2)
    assert code == 0 and "Traceback" not in err, err
    for i in range(4):
        assert f"fake{i}.dcm: unusable VOI window" in err
    images = np.concatenate([np.load(tmp_path / "out" / f"{s}.npy") for s in ("train", "holdout")])
    assert len(images) == 5 and all(image.std() > 10 for image in images)


# --- compressed DICOM: decoded by the pylibjpeg plugins, equal to the uncompressed original ---

@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_compressed_dicoms_equal_the_uncompressed_file(name):
    from medmem.data.cxr import read_dicom

    original = dicom_to_uint8(read_dicom(Path(get_testdata_file("MR_small.dcm"))), "MR_small.dcm")
    path = Path(get_testdata_file(name))
    assert read_dicom(path).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(dicom_to_uint8(read_dicom(path), path), original)


def test_jpeg_lossless_process14_decodes_to_the_same_pixels_as_rle():
    from pydicom.uid import JPEGLosslessSV1, RLELossless

    from medmem.data.cxr import read_dicom

    jpeg = read_dicom(Path(get_testdata_file("SC_rgb_jpeg_gdcm.dcm")))  # SC_rgb, JPEG Lossless SV1 by GDCM
    rle = read_dicom(Path(get_testdata_file("SC_rgb_rle.dcm")))  # the same image, RLE
    assert jpeg.file_meta.TransferSyntaxUID == JPEGLosslessSV1 and rle.file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(jpeg.pixel_array, rle.pixel_array)


def test_jpeg_lossless_grayscale_radiograph_is_prepared(tmp_path):
    """A 12-bit grayscale JPEG Lossless (process 14, first-order prediction) DICOM, the usual CR/DX
    transfer syntax, encoded here by a minimal independent encoder (`_jpeg_lossless`)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:48, :40]
    image = ((yy * 60 + xx * 20 + rng.integers(0, 50, yy.shape)) % 4096).astype(np.uint16)
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([_jpeg_lossless(image, 12)])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "in" / "cr.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    from medmem.data.cxr import read_dicom

    np.testing.assert_array_equal(read_dicom(path).pixel_array, image)
    expected = np.floor((image - image.min()) / (image.max() - image.min()) * 255.0 + 0.5)
    np.testing.assert_array_equal(dicom_to_uint8(read_dicom(path), path), expected)


def _jpeg_lossless(image: np.ndarray, precision: int) -> bytes:
    """ITU T.81 lossless JPEG (SOF3), one component, predictor 1, one Huffman table of 17 codes
    of 5 bits (difference categories 0-16)."""
    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    h, w = image.shape
    out = b"\xff\xd8"
    out += segment(0xC3, bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0]))
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5: category c has code c
    out += segment(0xC4, bytes([0x00]) + bytes(counts) + bytes(range(17)))
    out += segment(0xDA, bytes([1, 1, 0x00, 1, 0, 0]))  # Ss = predictor 1, Se = 0, Ah/Al = 0
    x = image.astype(np.int64)
    bits = []
    for r in range(h):
        for c in range(w):
            if r == 0 and c == 0:
                pred = 1 << (precision - 1)
            elif c == 0:
                pred = x[r - 1, 0]
            else:
                pred = x[r, c - 1]
            diff = int(x[r, c] - pred)
            size = abs(diff).bit_length()
            bits.append(format(size, "05b"))
            if size:
                bits.append(format(diff if diff > 0 else diff + (1 << size) - 1, f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i:i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0)
    return out + bytes(data) + b"\xff\xd9"


# --- --skip-bad: exactly the unusable images, listed without file names, counted ---

def test_skip_bad_counts_images_and_only_fully_skipped_patients(tmp_path):
    root = tmp_path / "in" / "NORMAL"
    for p in range(5):
        for k in range(2):
            _picture(root / f"IM-{p:04d}-{k:04d}.jpeg", p * 2 + k)
    (root / "IM-0001-0000.jpeg").write_text("not an image")  # patient 1 keeps one image
    (root / "IM-0003-0000.jpeg").write_text("not an image")  # patient 3 loses both
    (root / "IM-0003-0001.jpeg").write_text("not an image")
    out = tmp_path / "out"
    code, _, err = run_medmem("prepare", "cxr", tmp_path / "in", out, "--size", 16, "--holdout-fraction", 0.2,
                              "--skip-bad")
    assert code == 0, err
    info = json.loads((out / "dataset.json").read_text())
    assert info["skipped_images"] == 3 and info["skipped_items"] == 3 and info["skipped_subjects"] == 1
    assert info["subjects"]["train"] + info["subjects"]["holdout"] == 4
    assert info["images"]["train"] + info["images"]["holdout"] == 7
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == 3 and skipped["reason"].str.contains("not a readable image").all()
    assert not skipped["reason"].str.contains("IM-000").any()  # no file name in the outputs...
    for name in ("IM-0001-0000.jpeg", "IM-0003-0000.jpeg", "IM-0003-0001.jpeg"):
        assert name in err  # ...but the terminal and log name each file


def test_held_out_share_with_a_single_patient_is_an_error(tmp_path):
    for k in range(3):
        _picture(tmp_path / "in" / "NORMAL" / f"IM-0007-{k:04d}.jpeg", k)
    code, _, err = run_medmem("prepare", "cxr", tmp_path / "in", tmp_path / "out", "--size", 16,
                              "--holdout-fraction", 0.2)
    assert code == 2 and "no held-out image is left" in err.strip().splitlines()[-1], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_unreadable_dicom_is_reported_as_such_not_as_an_unknown_patient(tmp_path):
    root = tmp_path / "in"
    for i in range(4):
        _dicom(root / f"fake{i}.dcm", f"FAKE{i}")
    (root / "broken.dcm").write_bytes(b"DICM" * 10)
    code, _, err = run_medmem("prepare", "cxr", root, tmp_path / "out", "--size", 16, "--holdout-fraction", 0.25)
    assert code == 2 and "broken.dcm: not a readable DICOM file" in err.strip().splitlines()[-1], err
    code, _, err = run_medmem("prepare", "cxr", root, tmp_path / "out", "--size", 16, "--holdout-fraction", 0.25,
                              "--skip-bad")
    assert code == 0, err
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["skipped_items"] == 1 and info["skipped_subjects"] == 1
    assert info["subjects"]["train"] + info["subjects"]["holdout"] == 4
