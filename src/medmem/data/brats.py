"""The study's BraTS preprocessing (Akbar et al., from the authors' MATLAB code).

Per subject: each modality volume scaled by its own maximum to 0-255 in float64, segmentation
labels x 255/5, axial slices `volume[:, :, z]` centred on a size×size canvas, a slice kept only if
more than 15 % of its canvas T1 pixels exceed 50 (judged before rounding), then MATLAB's `uint8()`.
Channel order: T1, T2, FLAIR, T1ce, seg.

Source: muhamadusman/Assist, `Preparation/split_volumes_to_slices.m` (commit 43035d2): scaling
lines 98-101, segmentation × 255/5 line 105, 8-pixel zero padding to 256² lines 118-122, the
coverage rule (`sum(slice_T1(:) > 50)`, `/(256*256) > 0.15`) lines 133-136, `uint8()` line 142;
summarised in /work/shared/paper.md lines 27-44.
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

from medmem.data.files import input_dirs, input_files
from medmem.data.pixels import canvas_slices, matlab_uint8
from medmem.data.writer import DatasetWriter
from medmem.errors import InputError, SkippableInputError
from medmem.parallel import ordered_map

log = logging.getLogger(__name__)

CHANNELS = ["t1", "t2", "flair", "t1ce", "seg"]
MODALITIES = ["t1", "t1ce", "t2", "flair", "seg"]
COVERAGE_THRESHOLD = 0.15  # strict: a slice needs more than 15 % of pixels above the intensity (.m line 136)
INTENSITY_THRESHOLD = 50.0  # on the 0-255 scale, before uint8 (.m line 133)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for a file name ending in `.nii` or `.nii.gz` (any case); the file is not opened."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def find_modalities(subject_dir: Path) -> dict[str, Path]:
    """Map each modality to its file: `<anything>_<mod>.nii[.gz]`.

    The segmentation may be named otherwise (BraTS 2020 subject 355 ships `W39_1998.09.19_Segm.nii`):
    the one remaining NIfTI file whose name contains "seg" is taken.
    Raises SkippableInputError naming `subject_dir` for a missing or duplicated modality.
    """
    files = [p for p in input_files(subject_dir) if is_nifti(p)]  # debris such as `._<name>` left out
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


def read_volume_data(path: Path) -> np.ndarray:
    """A NIfTI volume's array, read by nibabel (`.nii`, `.nii.gz` of one or several gzip members,
    NIfTI-1 or NIfTI-2).

    The values are those of `nibabel.load(path).get_fdata()`: a file whose header scales its data
    (`scl_slope`, `scl_inter`) is returned as get_fdata's float64 array; an unscaled one as its
    stored array (same values, integer dtype kept, so the conversion can use lookup tables).
    With `indexed_gzip` installed nibabel decompresses through it (faster than Python's gzip).
    """
    image = nib.load(path)
    proxy = image.dataobj
    slope, inter = getattr(proxy, "slope", None), getattr(proxy, "inter", None)
    if slope is None or inter is None or (float(slope), float(inter)) != (1.0, 0.0):
        return image.get_fdata(dtype=np.float64)
    return np.asarray(proxy)


def load_volume(path: Path) -> np.ndarray:
    """One modality's 3-D array (X, Y, Z) as `read_volume_data` returns it (a trailing axis of 1 dropped).

    Raises SkippableInputError naming `path` for an unreadable or corrupt file, a shape that is not
    3-D, or NaN voxels.
    """
    try:
        volume = read_volume_data(path)
    except Exception as exc:  # nibabel, gzip and indexed_gzip raise many types for corrupt files
        raise SkippableInputError(path, f"cannot read NIfTI volume ({type(exc).__name__}: {exc})") from None
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise SkippableInputError(path, f"expected a 3-D volume, got shape {volume.shape}")
    if np.issubdtype(volume.dtype, np.floating) and np.isnan(volume).any():
        raise SkippableInputError(path, f"{int(np.isnan(volume).sum())} NaN voxels")
    return volume


def volume_peak(volume: np.ndarray, path: Path) -> float:
    """The volume's maximum (the study's divisor, `max(vol(:))`), a float > 0.

    Raises SkippableInputError naming `path` when the maximum is 0 or below (nothing to scale by).
    """
    peak = float(volume.max())
    if not peak > 0:
        raise SkippableInputError(path, f"maximum intensity is {peak:g} (empty volume), cannot scale")
    return peak


def scale_to_255(volume: np.ndarray, peak: float) -> np.ndarray:
    """The study's `vol / max(vol) * 255` (split_volumes_to_slices.m lines 98-101), float64, same shape,
    in that order of operations; values in [0, 255] for non-negative volumes and `peak` = their max."""
    return volume.astype(np.float64) / peak * 255


_LUT_MAX_RANGE = 1 << 20


def _value_range(volume: np.ndarray) -> tuple[int, int] | None:
    """(min, max) of an integer volume whose values fit a lookup table, else None."""
    if not np.issubdtype(volume.dtype, np.integer) or volume.size == 0:
        return None
    lo, hi = int(volume.min()), int(volume.max())
    return (lo, hi) if hi - lo < _LUT_MAX_RANGE else None


def uint8_of(volume: np.ndarray, formula) -> np.ndarray:
    """`matlab_uint8(formula(volume))`, through a lookup table for integer volumes; same shape, uint8.

    formula: an elementwise float64 → float64 function (e.g. `x / peak * 255`).

    Each table entry is computed with exactly the float64 operations applied to a voxel, so the
    bytes are identical; the table only avoids repeating them for every voxel.
    """
    span = _value_range(volume)
    if span is None:
        return matlab_uint8(formula(volume.astype(np.float64)))
    lo, hi = span
    table = matlab_uint8(formula(np.arange(lo, hi + 1, dtype=np.float64)))
    return table[volume.astype(np.int64) - lo] if lo else table[volume]


def unexpected_labels(seg: np.ndarray) -> list:
    """Sorted labels of `seg` (any shape, integer or float) outside BraTS's {0, 1, 2, 4}, non-integers
    included; [] when there are none (cheap comparisons; sorted only when some are found)."""
    bad = (seg < 0) | (seg > 4) | (seg == 3)
    if np.issubdtype(seg.dtype, np.floating):
        bad |= seg != np.round(seg)
    return sorted(np.unique(seg[bad]).tolist()) if bad.any() else []


def t1_coverage(t1: np.ndarray, peak: float, size: int) -> np.ndarray:
    """Share of the size×size canvas pixels per axial slice whose scaled T1 value exceeds 50.

    t1: (X, Y, Z) the raw T1 volume; peak: its maximum (> 0); size: canvas side in pixels.
    Returns (Z,) float64 in [0, 1]. Zero padding adds no pixel above 50, so only the part of the slice
    inside the canvas counts. The study's rule: split_volumes_to_slices.m lines 133-136.
    """
    visible = t1[canvas_slices(t1.shape[0], size)[0], canvas_slices(t1.shape[1], size)[0]]
    span = _value_range(visible)
    if span is None:
        above = scale_to_255(visible, peak) > INTENSITY_THRESHOLD
    else:  # v / peak * 255 is monotone in v: find the smallest integer above the threshold
        lo, hi = span
        passes = np.arange(lo, hi + 1, dtype=np.float64) / peak * 255 > INTENSITY_THRESHOLD
        above = visible >= (lo + int(np.argmax(passes)) if passes.any() else hi + 1)
    return np.count_nonzero(above, axis=(0, 1)) / (size * size)


@dataclass
class SubjectSlices:
    """The kept slices of one subject: `images` (n, 5, size, size) uint8 in `CHANNELS` order, `slices`
    (n,) int their axial indices z (0-based), `coverage` (n,) float64 their T1 coverage in (0.15, 1]."""

    subject: str
    images: np.ndarray  # (n, 5, size, size) uint8
    slices: np.ndarray  # kept z indices
    coverage: np.ndarray


def process_subject(subject_dir: Path, size: int = 256) -> SubjectSlices:
    """One subject folder through the study's preprocessing (see the module doc).

    size: canvas side in pixels (the study: 256; 240×240 slices padded by 8 on each side).
    Raises SkippableInputError naming the file or folder for a missing or duplicated modality,
    modalities of different shapes, an empty volume, NaN voxels, or segmentation labels outside
    {0, 1, 2, 4}.
    """
    files = find_modalities(subject_dir)
    volumes = {mod: load_volume(path) for mod, path in files.items()}
    shapes = {mod: vol.shape for mod, vol in volumes.items()}
    if len(set(shapes.values())) > 1:
        raise SkippableInputError(subject_dir, "modalities differ in shape: "
                                  + ", ".join(f"{m} {s}" for m, s in shapes.items()))
    peaks = {mod: volume_peak(volumes[mod], files[mod]) for mod in CHANNELS if mod != "seg"}
    coverage = t1_coverage(volumes["t1"], peaks["t1"], size)
    keep = np.flatnonzero(coverage > COVERAGE_THRESHOLD)

    rows, canvas_rows = canvas_slices(shapes["t1"][0], size)
    cols, canvas_cols = canvas_slices(shapes["t1"][1], size)
    images = np.zeros((len(keep), len(CHANNELS), size, size), np.uint8)
    for c, mod in enumerate(CHANNELS):
        kept = volumes[mod].T[keep][:, cols, rows]  # (n, y, x): NIfTI arrays are Fortran-ordered
        if mod == "seg":
            unexpected = unexpected_labels(volumes["seg"])
            if unexpected:
                raise SkippableInputError(files["seg"], f"unexpected segmentation labels {unexpected} "
                                          "(BraTS uses 0, 1, 2, 4)")
            channel = uint8_of(kept, lambda x: x * 255 / 5)
        else:
            channel = uint8_of(kept, lambda x, peak=peaks[mod]: x / peak * 255)
        images[:, c, canvas_rows, canvas_cols] = channel.transpose(0, 2, 1)
    return SubjectSlices(subject_dir.name, images, keep, coverage[keep])


def _process_or_error(args):
    subject_dir, size = args
    try:
        return process_subject(subject_dir, size)
    except SkippableInputError as exc:
        return exc


def list_subjects(input_dir: Path) -> dict[str, Path]:
    """Subject name → folder, for every sub-folder of `input_dir` holding a NIfTI file (debris skipped).

    Raises InputError when `input_dir` does not exist or holds no such folder.
    """
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: input folder does not exist")
    subjects = {p.name: p for p in input_dirs(input_dir) if any(is_nifti(f) for f in input_files(p))}
    if not subjects:
        raise InputError(f"{input_dir}: no subject folders with NIfTI files "
                         "(expected BraTS20_Training_NNN/ or BraTS2021_NNNNN/ folders)")
    return subjects


def split_from_order_file(subjects: list[str], order_csv: Path) -> list[tuple[str, str]]:
    """The study's split: subjects in the order file's order, with its train/holdout column.

    order_csv: columns `subject` and `split` (train or holdout), e.g. /work/shared/data/
    brats20_subject_order.csv (the authors' fixed permutation: split_volumes_to_slices.m lines 25-30;
    313 train + 56 held out for BraTS 2020, 1,195 + 56 for 2021, /work/shared/paper.md lines 18-20).
    Returns [(subject, split)] in file order. Raises InputError naming `order_csv` when it cannot be
    read, lacks a column, has another split value, or names a subject absent from `subjects`;
    subjects not in the file are ignored with a warning.
    """
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
    """A seeded shuffle of the sorted subject list: the first n_train train, the next n_holdout hold out.

    Returns [(subject, split)] (numpy `default_rng(seed).permutation`). Raises InputError when
    n_train < 1, n_holdout < 0, or n_train + n_holdout exceeds the subjects found.
    """
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
    """Prepare a BraTS release folder (one sub-folder of NIfTI volumes per subject) into `output_dir`.

    Split: `subject_order` (a CSV, see `split_from_order_file`) or else `n_train` / `n_holdout`
    subjects by a `seed`ed shuffle (`split_seeded`). Each subject goes through `process_subject` at
    `size` (canvas side, pixels), `workers` processes in parallel. Writes (see `DatasetWriter`)
    `train.npy` and `holdout.npy` (N, 5, size, size) uint8 in channel order t1, t2, flair, t1ce, seg,
    `slices.csv` (split, index, subject, slice, t1_coverage), `skipped.csv` and `dataset.json`, whose
    content is returned (kind "brats", channels, size, images per split, subjects per split, ...).

    Raises InputError (one line) for a missing folder, no subjects, neither split given, a bad order
    file, an empty training split or an empty held-out split that was asked for; a subject's
    SkippableInputError stops the run unless `skip_bad` (then it is listed in skipped.csv). Nothing is
    left under the final names on error.
    """
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
        writer.check_not_empty(input_dir, holdout_requested=any(sp == "holdout" for _, sp in plan))
        info = writer.commit({"subjects": {split: sum(1 for s, sp in plan if sp == split and s in kept)
                                           for split in ("train", "holdout")}})
    except BaseException:
        writer.abort()
        raise
    log.info("prepared %s: %s images, %d subject(s) skipped", output_dir, info["images"], len(writer.skipped))
    return info
