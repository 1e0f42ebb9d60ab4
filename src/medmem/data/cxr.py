"""Chest x-ray preparation: Kermany JPEGs and DICOM radiographs to 8-bit size×size images.

DICOM: modality LUT (rescale slope/intercept) first, then a VOI LUT sequence, or the first usable
WindowCenter / WindowWidth pair (DICOM's linear function), or else the full range of the image,
mapped to 0-255; MONOCHROME1 is inverted afterwards, so bone is always bright. A window whose centre
or width is not a finite number, or whose width is below 1 (the linear function's minimum), is
treated as absent, with a warning naming the file.
Resize (aspect rule): the shorter side is scaled to `size` with a Lanczos filter, then the longer
side is centre-cropped to `size`; no padding, no distortion.
Split: by patient, seeded, so no patient is on both sides (see `picture_patient` for the file-name
schemes, DICOM: PatientID). Images whose patient cannot be told stop the run unless an image-level
split was asked for. Subjects are written as pseudonyms (`cxr00000`, ...); no file name, patient
name, id or date leaves the input.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from medmem.data.files import input_files
from medmem.data.pixels import matlab_uint8
from medmem.data.writer import DatasetWriter
from medmem.errors import InputError, SkippableInputError
from medmem.parallel import ordered_map

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
LABELS = {"NORMAL", "PNEUMONIA"}


def window_linear(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear VOI function onto [0, 255]: float64, the shape of `values`.

    values: stored values after the modality LUT; centre, width: WindowCenter, WindowWidth (same units).

    Raises ValueError unless centre and width are finite and width >= 1 (see `usable_window`).
    """
    if not usable_window(centre, width):
        raise ValueError(f"window centre {centre}, width {width}: needs finite values and width >= 1")
    low = centre - 0.5 - (width - 1) / 2
    high = centre - 0.5 + (width - 1) / 2
    if width == 1:  # a step at the centre (the linear formula divides by width - 1)
        return np.where(values <= low, 0.0, 255.0)
    out = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.where(values <= low, 0.0, np.where(values > high, 255.0, out))


def usable_window(centre: float, width: float) -> bool:
    """A window the linear VOI function can apply: finite centre and width, width >= 1."""
    return bool(np.isfinite(centre) and np.isfinite(width) and width >= 1)


def full_range(values: np.ndarray) -> np.ndarray:
    """`values` (any shape) mapped linearly from [min, max] onto [0, 255], float64; all 0 when constant."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float64)
    return (values - lo) / (hi - lo) * 255.0


def _numbers(value) -> list[float]:
    """A DICOM DS value (one number or several) as floats; an unreadable entry becomes NaN."""
    items = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(
        value, (str, bytes)) else [value]
    out = []
    for item in items:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def windows(ds) -> list[tuple[float, float]]:
    """The (centre, width) pairs of a pydicom dataset's WindowCenter / WindowWidth, in order, as floats
    (NaN where unreadable; [] when either attribute is absent)."""
    try:
        centres, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    except Exception:  # a value pydicom cannot parse
        return [(float("nan"), float("nan"))]
    if centres is None or widths is None:
        return []
    return list(zip(_numbers(centres), _numbers(widths)))


def dicom_to_uint8(ds, path) -> np.ndarray:
    """Presentation-ready 8-bit grayscale from a pydicom dataset (see the module's rule): (H, W) uint8,
    bone bright.

    Raises SkippableInputError naming `path` for no pixel data, undecodable pixels, a photometric
    interpretation other than MONOCHROME1/2, more than one frame, or non-finite rescaled values.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds:
        raise SkippableInputError(path, "DICOM file has no pixel data")
    try:
        raw = ds.pixel_array
    except Exception as exc:
        raise SkippableInputError(path, f"cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SkippableInputError(path, f"photometric interpretation {photometric} is not a grayscale radiograph")
    if raw.ndim != 2:
        raise SkippableInputError(path, f"expected one 2-D frame, got pixel array of shape {raw.shape}")
    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    if not np.isfinite(values).all():
        raise SkippableInputError(path, "pixel values are not finite after the rescale slope/intercept")
    display = None
    if "VOILUTSequence" in ds:
        display = full_range(np.asarray(apply_voi_lut(values, ds), dtype=np.float64))
    else:
        pairs = windows(ds)
        usable = [pair for pair in pairs if usable_window(*pair)]
        if usable:
            display = window_linear(values, *usable[0])
        if pairs and pairs[0] not in usable:
            log.warning("%s: unusable VOI window (centre %s, width %s: needs finite values and width >= 1); "
                        "using %s", path, *pairs[0],
                        f"the next window (centre {usable[0][0]:g}, width {usable[0][1]:g})" if usable
                        else "the image's full range")
    if display is None:
        display = full_range(values)
    if photometric == "MONOCHROME1":
        display = 255.0 - display
    return matlab_uint8(display)


def read_dicom(path: Path):
    """The pydicom dataset of `path` (pixels decoded later); SkippableInputError naming it when unreadable."""
    import pydicom

    try:
        return pydicom.dcmread(path)
    except Exception as exc:
        raise SkippableInputError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def read_picture(path: Path) -> np.ndarray:
    """A JPEG/PNG as (H, W) uint8 grayscale (PIL's "L" conversion: ITU-R 601 luma for colour).

    Raises SkippableInputError naming `path` when PIL cannot read it.
    """
    try:
        with Image.open(path) as picture:
            picture.load()
            return np.asarray(picture.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SkippableInputError(path, f"not a readable image ({type(exc).__name__}: {exc})") from None


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Scale the shorter side to `size` (PIL Lanczos), then centre-crop the longer side.

    image: (H, W) uint8. Returns (size, size) uint8; no padding, no distortion.
    """
    h, w = image.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    resized = np.asarray(Image.fromarray(image, "L").resize((new_w, new_h), Image.Resampling.LANCZOS))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top:top + size, left:left + size]


@dataclass
class Radiograph:
    """One input file: its path, the patient key it is split by (None: unknown) and its label
    (NORMAL, PNEUMONIA or unknown)."""

    path: Path
    patient_key: str | None  # never written out: it may be an identifier; None: unknown patient
    label: str


# File-name schemes of the public chest x-ray sets: (pattern, patient key). Case-insensitive, on the
# file name. Kermany's three disease prefixes share one patient number space, so a number seen under
# two prefixes is taken as one patient (merging patients never puts one on both sides of a split).
PATIENT_SCHEMES = [
    # Kermany et al. 2018, Mendeley v3 (ChestXRay2017): NORMAL-<patient>-<k>, BACTERIA-..., VIRUS-...
    (re.compile(r"^(?:NORMAL|BACTERIA|VIRUS)-(\d+)-\d+\.", re.IGNORECASE), "kermany3:{}"),
    # the older Kaggle release: person<N>_bacteria_<k>, person<N>_virus_<k>
    (re.compile(r"^person(\d+)_", re.IGNORECASE), "kermany:person{}"),
    # ... and its normals IM-<N>-<k> and NORMAL2-IM-<N>-<k> (two separate numberings)
    (re.compile(r"^(NORMAL2-IM|IM)-(\d+)-\d+", re.IGNORECASE), "kermany:{}-{}"),
    # NIH ChestX-ray14: <patient, 8 digits>_<follow-up, 3 digits>.png
    (re.compile(r"^(\d{8})_\d{3}\.png$", re.IGNORECASE), "nih:{}"),
]


def picture_patient(path: Path) -> str | None:
    """Patient key of a JPEG/PNG from its file name (see PATIENT_SCHEMES); None if no scheme fits."""
    for pattern, key in PATIENT_SCHEMES:
        match = pattern.match(path.name)
        if match:
            return key.format(*(g.upper() for g in match.groups()))
    return None


kermany_patient = picture_patient  # the former name


# An input whose DICOM files all carry one PatientID, when there are at least this many of them,
# is taken as anonymised to a constant (a chest x-ray training set is not one person's images).
CONSTANT_ID_MIN_IMAGES = 10
IMAGE_LEVEL_HINT = "opt in to an image-level split (--image-level-split; config split: {image_level: true})"


def _rsna_labels(input_dir: Path) -> dict[str, str]:
    labels = {}
    for csv in (p for p in input_files(input_dir, recursive=True) if p.suffix.lower() == ".csv"):
        try:
            table = pd.read_csv(csv)
        except Exception:
            continue
        if {"patientId", "Target"} <= set(table.columns):
            for patient, target in table.groupby("patientId")["Target"].max().items():
                labels[str(patient)] = "PNEUMONIA" if target == 1 else "NORMAL"
    return labels


def _dicom_patient_id(path: Path) -> str | None:
    """The PatientID ("" if empty or absent); None if the file cannot be read as DICOM."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        return str(header.get("PatientID", "") or "").strip()
    except Exception:
        return None  # unreadable: reported (or skipped) with its reason when the pixels are read


def find_radiographs(input_dir: Path, image_level: bool = False) -> list[Radiograph]:
    """Every JPEG/PNG/DICOM under `input_dir` (debris left out) with its patient key and label.

    Patient keys: `picture_patient` for pictures, the PatientID for DICOM (None where empty or
    absent: a StudyInstanceUID or the file name would make one patient's studies several
    "patients", so none is used as a stand-in). Raises InputError when all of at least
    `CONSTANT_ID_MIN_IMAGES` DICOM files have the same PatientID (unless `image_level`, where
    their patient is taken as unknown).
    """
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: input folder does not exist")
    files = input_files(input_dir, recursive=True)
    pictures = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    dicoms = [p for p in files if p.suffix.lower() in DICOM_SUFFIXES]
    if not pictures and not dicoms:
        raise InputError(f"{input_dir}: no chest x-rays found (expected *.jpeg, *.jpg, *.png or *.dcm files)")
    rsna = _rsna_labels(input_dir)
    out = []
    for path in pictures:
        folder = path.parent.name.upper()
        out.append(Radiograph(path, picture_patient(path), folder if folder in LABELS else "unknown"))
    ids = [_dicom_patient_id(path) for path in dicoms]
    readable = [i for i in ids if i is not None]
    constant = len(readable) >= CONSTANT_ID_MIN_IMAGES and all(readable) and len(set(readable)) == 1
    if constant and not image_level:
        raise InputError(f"{input_dir}: all {len(readable)} DICOM files have the same PatientID (an anonymiser's "
                         "constant?), so patients cannot be told apart; restore distinct PatientIDs, or "
                         + IMAGE_LEVEL_HINT)
    for path, patient in zip(dicoms, ids):
        folder = path.parent.name.upper()
        label = folder if folder in LABELS else rsna.get(path.stem, rsna.get(patient or "", "unknown"))
        key = (f"unreadable:{path}" if patient is None  # never yields an image: its own "patient"
               else f"dicom:{patient}" if patient and not constant else None)
        out.append(Radiograph(path, key, label))
    return out


def split_keys(radiographs: list[Radiograph], input_dir: Path, holdout_fraction: float,
               image_level: bool) -> list[str]:
    """The key each image is split by: its patient, or itself when its patient is unknown and an
    image-level split was asked for.

    Raises InputError with the counts when some patients are unknown, a held-out share is asked
    for and no image-level split was: a patient could then land on both sides of the split.
    """
    unknown = [r for r in radiographs if r.patient_key is None]
    if unknown and holdout_fraction > 0 and not image_level:
        n_dicom = sum(r.path.suffix.lower() in DICOM_SUFFIXES for r in unknown)
        example = next((r.path for r in unknown if r.path.suffix.lower() not in DICOM_SUFFIXES), unknown[0].path)
        raise InputError(
            f"{input_dir}: the patient of {len(unknown)} of {len(radiographs)} images is unknown "
            f"({len(unknown) - n_dicom} file names in no known scheme, {n_dicom} DICOM files without a usable "
            f"PatientID; e.g. {example}), so a patient could be on both sides of the split; name the files as "
            "Kermany (NORMAL-<patient>-<k>.jpeg, person<N>_..., IM-<N>-<k>) or NIH (<patient>_<k>.png) do, "
            "or " + IMAGE_LEVEL_HINT)
    if unknown:
        log.warning("%s: the patient of %d of %d images is unknown; each of them is its own subject%s",
                    input_dir, len(unknown), len(radiographs),
                    " (image-level split: a patient may be on both sides)" if holdout_fraction > 0 else "")
    return [r.patient_key if r.patient_key is not None else f"image:{r.path}" for r in radiographs]


def load_radiograph(args) -> np.ndarray | SkippableInputError:
    """(path, size) → the (size, size) uint8 image of a picture or DICOM file, or the
    SkippableInputError that says why not (returned, not raised, for `ordered_map`'s workers): an
    unreadable file or an image under 8 pixels on a side."""
    path, size = args
    try:
        if path.suffix.lower() in DICOM_SUFFIXES:
            image = dicom_to_uint8(read_dicom(path), path)
        else:
            image = read_picture(path)
        if min(image.shape) < 8:
            raise SkippableInputError(path, f"image of {image.shape[1]}×{image.shape[0]} pixels is too small")
        return resize_square(image, size)
    except SkippableInputError as exc:
        return exc


def split_patients(keys: list[str], holdout_fraction: float, seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """Seeded patient-level split; returns (pseudonym per key, split per key).

    keys: one per image (patients repeat). Pseudonyms `cxr00000`, ... follow a seeded shuffle of the
    sorted unique keys (numpy `default_rng(seed)`); the first round(holdout_fraction × patients) are
    held out (at least 1 and at most patients − 1 when holdout_fraction > 0 and there are two or
    more). Raises InputError when holdout_fraction is outside [0, 1).
    """
    if not 0 <= holdout_fraction < 1:
        raise InputError(f"--holdout-fraction must be in [0, 1), got {holdout_fraction}")
    unique = sorted(set(keys))
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    pseudonym = {key: f"cxr{rank:05d}" for rank, key in enumerate(order)}
    n_holdout = round(holdout_fraction * len(unique))
    if holdout_fraction > 0 and len(unique) > 1:
        n_holdout = min(max(n_holdout, 1), len(unique) - 1)
    split = {key: ("holdout" if rank < n_holdout else "train") for rank, key in enumerate(order)}
    return pseudonym, split


def prepare_cxr(input_dir, output_dir, *, holdout_fraction: float = 0.1, seed: int = 0, size: int = 256,
                skip_bad: bool = False, workers: int = 1, image_level: bool = False) -> dict:
    """Prepare a chest x-ray folder into `output_dir` (see the module's docstring); returns dataset.json.

    Writes (see `DatasetWriter`) `train.npy` and `holdout.npy` (N, 1, size, size) uint8 (channel
    "xray"), `slices.csv` (split, index, subject pseudonym, slice (empty), label), `skipped.csv` and
    `dataset.json` (kind "cxr", images and patients per split, `split_level`, ...).
    holdout_fraction: share of patients held out, in [0, 1); seed: the split's shuffle; size: image
    side in pixels; workers: processes decoding images; skip_bad: list unreadable images in
    skipped.csv instead of stopping.
    `image_level`: images whose patient is unknown are split one by one instead of stopping the run
    (recorded in dataset.json as `split_level: image` with the number of such images).
    Raises InputError (one line) for bad input, an unknown patient without `image_level`, an empty
    training split, or an empty held-out split when `holdout_fraction` > 0.
    """
    input_dir = Path(input_dir)
    radiographs = find_radiographs(input_dir, image_level)
    keys = split_keys(radiographs, input_dir, holdout_fraction, image_level)
    pseudonym, split = split_patients(keys, holdout_fraction, seed)
    # output order: by split, then pseudonym, then file order (file names are never written)
    ordered = sorted(zip(radiographs, keys), key=lambda rk: (split[rk[1]] != "train", pseudonym[rk[1]]))
    writer = DatasetWriter(output_dir, ["xray"], size, "cxr", ["label"])
    try:
        results = ordered_map(load_radiograph, [(r.path, size) for r, _ in ordered], workers, ahead=8)
        for (radiograph, key), result in tqdm(zip(ordered, results), total=len(ordered), unit="image",
                                              desc="prepare cxr"):
            subject = pseudonym[key]
            if isinstance(result, SkippableInputError):
                if not skip_bad:
                    raise result
                log.warning("skipped an image of %s: %s", subject, result)
                writer.skip(subject, result.redacted())  # skipped.csv carries no file name
                continue
            writer.add(split[key], result[None, None], [{"subject": subject, "label": radiograph.label}])
        kept = {(row["split"], row["subject"]) for row in writer.rows}
        patients = {s: sum(1 for sp, _ in kept if sp == s) for s in ("train", "holdout")}
        writer.check_not_empty(input_dir, holdout_requested=holdout_fraction > 0)
        unknown = sum(r.patient_key is None for r in radiographs)
        level = "image" if unknown and holdout_fraction > 0 else "patient"
        info = writer.commit({"subjects": patients, "split_level": level, "images_without_patient": unknown,
                              "skipped_images": len(writer.skipped)})
    except BaseException:
        writer.abort()
        raise
    log.info("prepared %s: %s images from %s patients, %d image(s) skipped", output_dir, info["images"],
             patients, len(writer.skipped))
    return info
