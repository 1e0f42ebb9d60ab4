"""Chest x-ray preparation: Kermany JPEGs and DICOM radiographs to 8-bit size×size images.

DICOM: modality LUT (rescale slope/intercept) first, then the VOI window (the first WindowCenter /
WindowWidth pair, DICOM's linear function) or a VOI LUT sequence, or else the full range of the
image, mapped to 0-255; MONOCHROME1 is inverted afterwards, so bone is always bright.
Resize (aspect rule): the shorter side is scaled to `size` with a Lanczos filter, then the longer
side is centre-cropped to `size`; no padding, no distortion.
Split: by patient (Kermany file name `person<N>_...` or `IM-<N>-...`; DICOM PatientID), seeded, so no
patient is on both sides. Subjects are written as pseudonyms (`cxr00000`, ...); no file name, patient
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

from medmem.data.pixels import matlab_uint8
from medmem.data.writer import DatasetWriter
from medmem.errors import InputError, SkippableInputError
from medmem.parallel import ordered_map

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
LABELS = {"NORMAL", "PNEUMONIA"}


def window_linear(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear VOI function onto [0, 255] (float)."""
    if width < 1:
        raise ValueError("window width must be at least 1")
    low = centre - 0.5 - (width - 1) / 2
    high = centre - 0.5 + (width - 1) / 2
    out = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.where(values <= low, 0.0, np.where(values > high, 255.0, out))


def full_range(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float64)
    return (values - lo) / (hi - lo) * 255.0


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def dicom_to_uint8(ds, path) -> np.ndarray:
    """Presentation-ready 8-bit grayscale from a DICOM dataset (see the module's rule)."""
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
    if "VOILUTSequence" in ds:
        display = full_range(np.asarray(apply_voi_lut(values, ds), dtype=np.float64))
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        display = window_linear(values, _first(ds.WindowCenter), _first(ds.WindowWidth))
    else:
        display = full_range(values)
    if photometric == "MONOCHROME1":
        display = 255.0 - display
    return matlab_uint8(display)


def read_dicom(path: Path):
    import pydicom

    try:
        return pydicom.dcmread(path)
    except Exception as exc:
        raise SkippableInputError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def read_picture(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            picture.load()
            return np.asarray(picture.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SkippableInputError(path, f"not a readable image ({type(exc).__name__}: {exc})") from None


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Scale the shorter side to `size` (Lanczos), then centre-crop the longer side."""
    h, w = image.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    resized = np.asarray(Image.fromarray(image, "L").resize((new_w, new_h), Image.Resampling.LANCZOS))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top:top + size, left:left + size]


@dataclass
class Radiograph:
    path: Path
    patient_key: str  # never written out: it may be an identifier
    label: str


def kermany_patient(path: Path) -> str:
    """Patient of a Kermany file: `person<N>_...` (pneumonia) or `[NORMAL2-]IM-<N>-<k>` (normal)."""
    match = re.match(r"^(person\d+)_", path.name, re.IGNORECASE)
    if match:
        return f"kermany:{match.group(1).lower()}"
    match = re.match(r"^((?:NORMAL2-)?IM-\d+)-", path.name, re.IGNORECASE)
    if match:
        return f"kermany:{match.group(1).upper()}"
    return f"file:{path.stem}"  # unknown naming: each image its own patient


def _rsna_labels(input_dir: Path) -> dict[str, str]:
    labels = {}
    for csv in sorted(input_dir.rglob("*.csv")):
        try:
            table = pd.read_csv(csv)
        except Exception:
            continue
        if {"patientId", "Target"} <= set(table.columns):
            for patient, target in table.groupby("patientId")["Target"].max().items():
                labels[str(patient)] = "PNEUMONIA" if target == 1 else "NORMAL"
    return labels


def find_radiographs(input_dir: Path) -> list[Radiograph]:
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: input folder does not exist")
    files = sorted(p for p in input_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    pictures = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    dicoms = [p for p in files if p.suffix.lower() in DICOM_SUFFIXES]
    if not pictures and not dicoms:
        raise InputError(f"{input_dir}: no chest x-rays found (expected *.jpeg, *.jpg, *.png or *.dcm files)")
    rsna = _rsna_labels(input_dir)
    out = []
    for path in pictures:
        folder = path.parent.name.upper()
        out.append(Radiograph(path, kermany_patient(path), folder if folder in LABELS else "unknown"))
    for path in dicoms:
        import pydicom

        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
            patient = str(header.get("PatientID", "") or "")
        except Exception:
            patient = ""  # unreadable: reported with its reason when the pixels are read
        folder = path.parent.name.upper()
        label = folder if folder in LABELS else rsna.get(path.stem, rsna.get(patient, "unknown"))
        out.append(Radiograph(path, f"dicom:{patient}" if patient else f"file:{path.stem}", label))
    return out


def load_radiograph(args) -> np.ndarray | SkippableInputError:
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
    """Seeded patient-level split; returns (pseudonym per key, split per key)."""
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
                skip_bad: bool = False, workers: int = 1) -> dict:
    input_dir = Path(input_dir)
    radiographs = find_radiographs(input_dir)
    pseudonym, split = split_patients([r.patient_key for r in radiographs], holdout_fraction, seed)
    # output order: by split, then pseudonym, then file order (file names are never written)
    ordered = sorted(radiographs, key=lambda r: (split[r.patient_key] != "train", pseudonym[r.patient_key]))
    writer = DatasetWriter(output_dir, ["xray"], size, "cxr", ["label"])
    try:
        results = ordered_map(load_radiograph, [(r.path, size) for r in ordered], workers, ahead=8)
        for radiograph, result in tqdm(zip(ordered, results), total=len(ordered), unit="image",
                                       desc="prepare cxr"):
            subject = pseudonym[radiograph.patient_key]
            if isinstance(result, SkippableInputError):
                if not skip_bad:
                    raise result
                log.warning("skipped an image of %s: %s", subject, result)
                writer.skip(subject, result.problem)
                continue
            writer.add(split[radiograph.patient_key], result[None, None],
                       [{"subject": subject, "label": radiograph.label}])
        patients = {s: len({pseudonym[r.patient_key] for r in radiographs if split[r.patient_key] == s})
                    for s in ("train", "holdout")}
        info = writer.commit({"subjects": patients})
    except BaseException:
        writer.abort()
        raise
    log.info("prepared %s: %s images from %s patients, %d image(s) skipped", output_dir, info["images"],
             patients, len(writer.skipped))
    return info
