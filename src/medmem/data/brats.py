"""The study's BraTS preprocessing (Akbar et al., from the authors' MATLAB code).

Per subject: each modality volume scaled by its own maximum to 0-255 in float64, segmentation
labels x 255/5, axial slices `volume[:, :, z]` centred on a size×size canvas, a slice kept only if
more than 15 % of its canvas T1 pixels exceed 50 (judged before rounding), then MATLAB's `uint8()`.
Channel order: T1, T2, FLAIR, T1ce, seg.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from medmem.data.pixels import matlab_uint8, pad_or_crop
from medmem.data.writer import DatasetWriter
from medmem.errors import InputError, SkippableInputError
from medmem.parallel import ordered_map

log = logging.getLogger(__name__)

CHANNELS = ["t1", "t2", "flair", "t1ce", "seg"]
MODALITIES = ["t1", "t1ce", "t2", "flair", "seg"]
SEG_LABELS = {0, 1, 2, 4}
COVERAGE_THRESHOLD = 0.15  # strict: a slice needs more than 15 % of pixels above the intensity
INTENSITY_THRESHOLD = 50.0
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def find_modalities(subject_dir: Path) -> dict[str, Path]:
    """Map each modality to its file: `<anything>_<mod>.nii[.gz]`.

    The segmentation may be named otherwise (BraTS 2020 subject 355 ships `W39_1998.09.19_Segm.nii`):
    the one remaining NIfTI file whose name contains "seg" is taken.
    """
    files = sorted(p for p in subject_dir.iterdir() if p.is_file() and is_nifti(p))
    found: dict[str, Path] = {}
    for mod in MODALITIES:
        matches = [p for p in files if re.search(rf"_{mod}\.nii(\.gz)?$", p.name, re.IGNORECASE)]
        if len(matches) > 1:
            raise SkippableInputError(subject_dir, f"several {mod} files: "
                                      + ", ".join(p.name for p in matches))
        if matches:
            found[mod] = matches[0]
    if "seg" not in found:
        rest = [p for p in files if p not in found.values() and "seg" in p.name.lower()]
        if len(rest) == 1:
            found["seg"] = rest[0]
    missing = [mod for mod in MODALITIES if mod not in found]
    if missing:
        raise SkippableInputError(subject_dir, f"missing modality {', '.join(missing)} "
                                  f"(expected <subject>_<modality>.nii or .nii.gz)")
    return found


def load_volume(path: Path) -> np.ndarray:
    try:
        volume = np.asarray(nib.load(path).dataobj)
    except Exception as exc:  # nibabel, gzip and zlib raise many types for corrupt files
        raise SkippableInputError(path, f"cannot read NIfTI volume ({type(exc).__name__}: {exc})") from None
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise SkippableInputError(path, f"expected a 3-D volume, got shape {volume.shape}")
    if np.issubdtype(volume.dtype, np.floating) and np.isnan(volume).any():
        raise SkippableInputError(path, f"{int(np.isnan(volume).sum())} NaN voxels")
    return volume


def volume_peak(volume: np.ndarray, path: Path) -> float:
    peak = float(volume.max())
    if not peak > 0:
        raise SkippableInputError(path, f"maximum intensity is {peak:g} (empty volume), cannot scale")
    return peak


def scale_to_255(volume: np.ndarray, peak: float) -> np.ndarray:
    """The study's `vol / max(vol) * 255`, in float64 and in that order of operations."""
    return volume.astype(np.float64) / peak * 255


def t1_coverage(t1_scaled_canvas: np.ndarray) -> np.ndarray:
    """Share of canvas pixels per axial slice whose scaled T1 value exceeds 50."""
    above = (t1_scaled_canvas > INTENSITY_THRESHOLD).sum(axis=(0, 1))
    return above / (t1_scaled_canvas.shape[0] * t1_scaled_canvas.shape[1])


@dataclass
class SubjectSlices:
    subject: str
    images: np.ndarray  # (n, 5, size, size) uint8
    slices: np.ndarray  # kept z indices
    coverage: np.ndarray


def process_subject(subject_dir: Path, size: int = 256) -> SubjectSlices:
    files = find_modalities(subject_dir)
    volumes = {mod: load_volume(path) for mod, path in files.items()}
    shapes = {mod: vol.shape for mod, vol in volumes.items()}
    if len(set(shapes.values())) > 1:
        raise SkippableInputError(subject_dir, f"modalities differ in shape: "
                                  + ", ".join(f"{m} {s}" for m, s in shapes.items()))
    peaks = {mod: volume_peak(volumes[mod], files[mod]) for mod in CHANNELS if mod != "seg"}
    t1_scaled = scale_to_255(volumes["t1"], peaks["t1"])
    coverage = t1_coverage(pad_or_crop(t1_scaled, size))
    keep = np.flatnonzero(coverage > COVERAGE_THRESHOLD)

    channels = []
    for mod in CHANNELS:
        if mod == "seg":
            seg = volumes["seg"]
            labels = set(np.unique(seg).tolist())
            if not labels <= SEG_LABELS:
                raise SkippableInputError(files['seg'], f"unexpected segmentation labels "
                                          f"{sorted(labels - SEG_LABELS)} (BraTS uses 0, 1, 2, 4)")
            scaled = seg[:, :, keep].astype(np.float64) * 255 / 5
        elif mod == "t1":
            scaled = t1_scaled[:, :, keep]
        else:
            scaled = scale_to_255(volumes[mod][:, :, keep], peaks[mod])
        channels.append(matlab_uint8(pad_or_crop(scaled, size)))
    images = np.stack(channels, axis=0).transpose(3, 0, 1, 2)  # (n, C, H, W)
    return SubjectSlices(subject_dir.name, np.ascontiguousarray(images), keep, coverage[keep])


def _process_or_error(args):
    subject_dir, size = args
    try:
        return process_subject(subject_dir, size)
    except SkippableInputError as exc:
        return exc


def list_subjects(input_dir: Path) -> dict[str, Path]:
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: input folder does not exist")
    subjects = {p.name: p for p in sorted(input_dir.iterdir())
                if p.is_dir() and any(is_nifti(f) for f in p.iterdir())}
    if not subjects:
        raise InputError(f"{input_dir}: no subject folders with NIfTI files "
                         "(expected BraTS20_Training_NNN/ or BraTS2021_NNNNN/ folders)")
    return subjects


def split_from_order_file(subjects: list[str], order_csv: Path) -> list[tuple[str, str]]:
    """The study's split: subjects in the order file's order, with its train/holdout column."""
    try:
        order = pd.read_csv(order_csv, dtype=str)
    except Exception as exc:
        raise InputError(f"{order_csv}: cannot read subject order file ({exc})") from None
    if not {"subject", "split"} <= set(order.columns):
        raise InputError(f"{order_csv}: needs columns 'subject' and 'split'")
    bad = sorted(set(order["split"]) - {"train", "holdout"})
    if bad:
        raise InputError(f"{order_csv}: split must be train or holdout, found {bad}")
    present = set(subjects)
    missing = [s for s in order["subject"] if s not in present]
    if missing:
        raise InputError(f"{order_csv}: {len(missing)} subject(s) of the order file are not in the "
                         f"input folder: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    ignored = sorted(present - set(order["subject"]))
    if ignored:
        log.warning("%d subject(s) in the input folder are not in %s and are ignored: %s",
                    len(ignored), order_csv, ", ".join(ignored[:5]))
    return list(zip(order["subject"], order["split"]))


def split_seeded(subjects: list[str], n_train: int, n_holdout: int, seed: int) -> list[tuple[str, str]]:
    """A seeded shuffle of the sorted subject list: the first n_train train, the next n_holdout hold out."""
    if n_train < 1 or n_holdout < 0:
        raise InputError(f"--train must be at least 1 and --holdout at least 0 (got {n_train}, {n_holdout})")
    if n_train + n_holdout > len(subjects):
        raise InputError(f"--train {n_train} + --holdout {n_holdout} exceeds the {len(subjects)} subjects found")
    order = [sorted(subjects)[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    unused = len(subjects) - n_train - n_holdout
    if unused:
        log.warning("%d subject(s) are in neither split", unused)
    return [(s, "train") for s in order[:n_train]] + [(s, "holdout") for s in order[n_train:n_train + n_holdout]]


def prepare_brats(input_dir, output_dir, *, subject_order=None, n_train=None, n_holdout=None,
                  seed: int = 0, size: int = 256, skip_bad: bool = False, workers: int = 1) -> dict:
    input_dir = Path(input_dir)
    found = list_subjects(input_dir)
    if subject_order is not None:
        plan = split_from_order_file(list(found), Path(subject_order))
    elif n_train is not None:
        plan = split_seeded(list(found), n_train, n_holdout or 0, seed)
    else:
        raise InputError("give either --subject-order CSV or --train N --holdout M")

    writer = DatasetWriter(output_dir, CHANNELS, size, "brats", ["t1_coverage"])
    try:
        jobs = [(found[subject], size) for subject, _ in plan]
        results = ordered_map(_process_or_error, jobs, workers)
        for (subject, split), result in tqdm(zip(plan, results), total=len(plan), unit="subject",
                                             desc="prepare brats"):
            if isinstance(result, SkippableInputError):
                if not skip_bad:
                    raise result
                log.warning("skipped %s: %s", subject, result)
                writer.skip(subject, str(result))
                continue
            rows = [{"subject": subject, "slice": int(z), "t1_coverage": round(float(c), 6)}
                    for z, c in zip(result.slices, result.coverage)]
            writer.add(split, result.images, rows)
        kept = {s for s, _ in plan} - {row["subject"] for row in writer.skipped}
        info = writer.commit({"subjects": {split: sum(1 for s, sp in plan if sp == split and s in kept)
                                           for split in ("train", "holdout")}})
    except BaseException:
        writer.abort()
        raise
    log.info("prepared %s: %s images, %d subject(s) skipped", output_dir, info["images"], len(writer.skipped))
    return info
