"""Image sets in the formats they are kept in, streamed into the uint8 N×C×H×W `.npy` the search reads.

Formats (training, held-out and synthetic sets alike), recognised from the path:

- **the study's layout**: a folder with one sub-folder per channel (`T1/`, `T2/`, `FLAIR/`, `T1CE/` or
  `T1ce/`, `Seg/` or `SEG/`, any case) of `Subject_<id>_slice_<z>_<mod>.png` (real slices) or
  `seed<NNNN>.png` (StyleGAN samples); images are matched across channels by name, the trailing
  `_<mod>` removed;
- **flat folders of pictures** (PNG, JPEG, TIFF; searched recursively) with one channel, or RGB whose
  three channels are equal (a JPEG may differ by up to 2 grey levels: then its ITU-R 601 luma is used);
- **NIfTI**: BraTS subject folders (`prepare brats`'s own code: the five channels t1, t2, flair, t1ce,
  seg), or single volumes (`.nii`, `.nii.gz`: one channel, scaled by the volume's maximum, axial
  slices on a size×size canvas, kept where more than 15 % of the canvas exceeds 50: the study's rule);
- **DICOM** files (`.dcm`, `.dicom`): `prepare cxr`'s reading (modality LUT, VOI window or LUT, else
  the full range; MONOCHROME1 inverted), at their own size;
- **arrays**: `.npy` or `.npz` (key `arr_0`, or the only key) of uint8 in N×C×H×W, N×H×W×C (guided-
  diffusion's `samples_NxHxWxC.npz`) or N×H×W. The layout is read from the shape: channels are the
  axis of at most 16 next to a spatial axis of more than 16. Three equal channels count as one.

**16-bit pictures** (and float TIFFs) become 8-bit by their own full range: (v − min) / (max − min) × 255,
rounded half away from zero (a constant image becomes 0). Pearson r is unchanged by a per-image linear
rescale, so this keeps the most precision (12-bit data stored in 16 bits keeps 8 bits) without
changing what the search measures beyond rounding.

Subject and slice come from names where they exist (`Subject_<id>_slice_<z>`, `<subject>_slice<z>`,
Kermany `person<N>_`, BraTS subject folders and volume files with the slice index z). OS debris
(`._*`, `.DS_Store`, `__MACOSX/`, `Thumbs.db`, `desktop.ini`, hidden files) is ignored.

Bad input (unreadable files, mismatched sizes, a channel missing for some image, colour pictures,
ambiguous array layouts) raises `InputError` with one line naming the file; writers are aborted, so
nothing is left under the output names.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from medmem.audit.scan import (DICOM_SUFFIXES, FILES_SEP, STUDY_CHANNELS, ImageSet, Item,  # noqa: F401
                               _as_nchw, _open_array, _suffix, is_os_debris, parse_name, scan)
from medmem.data import brats, cxr
from medmem.data.pixels import canvas_slices, matlab_uint8
from medmem.data.writer import DatasetWriter
from medmem.errors import InputError, SkippableInputError
from medmem.io import NpyWriter, atomic_output, read_dataset_info, write_csv, write_json
from medmem.parallel import ordered_map

log = logging.getLogger(__name__)

JPEG_GREY_TOLERANCE = 2  # grey levels by which a JPEG's R, G and B may differ and still count as grey
TASK_ITEMS = 16  # images per task sent to a worker process


# --- reading pixels (in worker processes) -------------------------------------------------------------

def _full_range_uint8(values: np.ndarray) -> np.ndarray:
    return matlab_uint8(cxr.full_range(values.astype(np.float64)))


def read_picture(path: Path, raw: bytes) -> np.ndarray:
    """(H, W) uint8 from a PNG, JPEG or TIFF's bytes (see the module doc for 16-bit and RGB pictures).

    Raises InputError naming `path` for an unreadable file, several frames, transparency, colour or
    an unsupported mode.
    """
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            frames = getattr(picture, "n_frames", 1)
            if frames > 1:
                raise InputError(f"{path}: {frames} frames in one picture; expected one image")
            picture.load()
            mode, fmt = picture.mode, picture.format
            if mode == "P":
                picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
                mode = picture.mode
            array = np.asarray(picture)
            if mode in ("RGB", "RGBA"):
                if mode == "RGBA" and (array[..., 3] != 255).any():
                    raise InputError(f"{path}: transparent pixels; expected an opaque grayscale image")
                rgb = array[..., :3].astype(np.int16)
                spread = int(np.abs(rgb - rgb[..., :1]).max())
                if spread == 0:
                    return np.ascontiguousarray(array[..., 0])
                if fmt == "JPEG" and spread <= JPEG_GREY_TOLERANCE:
                    return np.asarray(picture.convert("L"))
                raise InputError(f"{path}: colour image (R, G and B differ by up to {spread}); expected grayscale")
            if mode == "LA":
                return np.ascontiguousarray(array[..., 0])
            if mode == "1":
                return array.astype(np.uint8) * 255
            if mode == "L":
                return array
            if mode.startswith(("I", "F")):  # 16-bit or 32-bit integer, float
                return _full_range_uint8(array)
            raise InputError(f"{path}: picture mode {mode} is not supported")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def read_dicom(path: Path, raw: bytes) -> np.ndarray:
    """(H, W) uint8 through `prepare cxr`'s DICOM rule (`cxr.dicom_to_uint8`).

    Raises InputError naming `path` for an unreadable file; SkippableInputError for pixels that rule refuses.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(raw))
    except Exception as exc:
        raise InputError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    return cxr.dicom_to_uint8(ds, path)


def volume_slices(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One NIfTI volume as `prepare brats` takes a modality: (n, 1, size, size) uint8 and the kept z.

    Scaled by the volume's maximum (the study's vol / max × 255), axial slices `volume[:, :, z]` on a
    centred size×size canvas, kept where more than 15 % of the canvas exceeds 50 (the study's T1 rule,
    applied to the volume itself). Kept z: (n,) int64, 0-based. Raises SkippableInputError naming
    `path` for an unreadable, non-3-D, NaN or empty volume.
    """
    volume = brats.load_volume(path)
    peak = brats.volume_peak(volume, path)
    coverage = brats.t1_coverage(volume, peak, size)
    keep = np.flatnonzero(coverage > brats.COVERAGE_THRESHOLD)
    rows, canvas_rows = canvas_slices(volume.shape[0], size)
    cols, canvas_cols = canvas_slices(volume.shape[1], size)
    kept = volume.T[keep][:, cols, rows]
    images = np.zeros((len(keep), 1, size, size), np.uint8)
    images[:, 0, canvas_rows, canvas_cols] = brats.uint8_of(kept, lambda x: x / peak * 255).transpose(0, 2, 1)
    return images, keep


def _read_item(item: Item, size: int) -> tuple[np.ndarray, list[dict], list[tuple[Path, str, int]]]:
    """(images (n, C, H, W) uint8, one row per image, (file, sha256, bytes) per file read)."""
    hashes = []
    if item.kind == "subject":
        result = brats.process_subject(item.paths[0], size)
        for f in sorted(brats.find_modalities(item.paths[0]).values()):
            hashes.append((f, *_hash_file(f)))
        rows = [{"name": f"{item.name}/slice_{int(z)}", "subject": item.subject, "slice": int(z),
                 "files": f"{item.name}/slice_{int(z)}"} for z in result.slices]
        return result.images, rows, hashes
    if item.kind == "volume":
        images, keep = volume_slices(item.paths[0], size)
        hashes.append((item.paths[0], *_hash_file(item.paths[0])))
        rows = [{"name": f"{item.name}#z{int(z)}", "subject": item.subject, "slice": int(z),
                 "files": f"{item.name}#z{int(z)}"} for z in keep]
        return images, rows, hashes
    planes = []
    for path in item.paths:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        hashes.append((path, hashlib.sha256(raw).hexdigest(), len(raw)))
        planes.append(read_dicom(path, raw) if _suffix(path) in DICOM_SUFFIXES else read_picture(path, raw))
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise InputError(f"{item.paths[1]}: channels of one image differ in size: "
                         + ", ".join(f"{p.name} {s[1]}×{s[0]}" for p, s in zip(item.paths, (q.shape for q in planes))))
    row = {"name": item.name, "subject": item.subject, "slice": item.slice, "files": FILES_SEP.join(item.files)}
    return np.stack(planes)[None], [row], hashes


def _hash_file(path: Path, chunk: int = 1 << 22) -> tuple[str, int]:
    digest, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            n += len(block)
    return digest.hexdigest(), n


def _read_task(args):
    items, size = args
    out = []
    for item in items:
        try:
            out.append(_read_item(item, size))
        except SkippableInputError as exc:
            return InputError(str(exc))
        except InputError as exc:
            return exc
    return out


def stream(found: ImageSet, size: int = 256, workers: int = 1, desc: str = "import"):
    """Yield (images (n, C, H, W) uint8, rows, hashes) in the set's order, read on `workers` processes.

    Holds at most a few tasks of images in memory; checks that every image has the first one's shape.
    """
    if found.format == "array":
        array, layout = found.array, found.layout  # type: ignore[attr-defined]
        digest, n = _hash_file(found.source)
        one = len(found.channels) == 1 and layout != "NHW" and array.shape[1 if layout == "NCHW" else 3] == 3
        bar = tqdm(total=len(array), unit="image", desc=desc)
        for start in range(0, len(array), 256):
            block = np.ascontiguousarray(_as_nchw(np.asarray(array[start:start + 256]), layout))
            block = block[:, :1] if one else block
            rows = [{"name": f"{found.source.name}[{i}]", "subject": None, "slice": None,
                     "files": f"{found.source.name}[{i}]"}
                    for i in range(start, start + len(block))]
            bar.update(len(block))
            yield block, rows, ([(found.source, digest, n)] if start == 0 else [])
        bar.close()
        return
    tasks = [(found.items[i:i + TASK_ITEMS], size) for i in range(0, len(found.items), TASK_ITEMS)]
    shape, first = None, None
    with tqdm(total=len(found.items), unit="file" if found.format not in ("brats", "nifti") else "volume",
              desc=desc) as bar:
        for task, result in zip(tasks, ordered_map(_read_task, tasks, workers, ahead=4)):
            if isinstance(result, Exception):
                raise result
            for item, (images, rows, hashes) in zip(task[0], result):
                if found.pick is not None:
                    images = np.ascontiguousarray(images[:, found.pick])
                if shape is None:
                    shape, first = images.shape[1:], item.paths[0]
                elif images.shape[1:] != shape:
                    raise InputError(f"{item.paths[0]}: image of {images.shape[3]}×{images.shape[2]} pixels "
                                     f"and {images.shape[1]} channel(s), but {first} has {shape[2]}×{shape[1]} and "
                                     f"{shape[0]}: all images of a set must have one size")
                yield images, rows, hashes
            bar.update(len(task[0]))


@dataclass
class Imported:
    """What an import wrote: counts, image shape, and every input file with its SHA-256."""
    source: Path
    format: str
    channels: list[str]
    n_images: int
    shape: tuple  # (C, H, W)
    fingerprints: pd.DataFrame  # file, bytes, sha256

    @property
    def sha256(self) -> str:
        """One SHA-256 for the whole set: over the sorted lines `relative path\\0sha256\\n` of its files."""
        digest = hashlib.sha256()
        for row in self.fingerprints.sort_values("file").itertuples():
            digest.update(f"{row.file}\0{row.sha256}\n".encode())
        return digest.hexdigest()


def _fingerprints(found: ImageSet, hashes: list) -> pd.DataFrame:
    root = found.source if found.source.is_dir() else found.source.parent
    return pd.DataFrame([{"file": Path(p).relative_to(root).as_posix(), "bytes": n, "sha256": h}
                         for p, h, n in hashes], columns=["file", "bytes", "sha256"])


def import_images(source, output_npy, output_csv, *, channels=None, size: int = 256, workers: int = 1,
                  expect_shape=None) -> Imported:
    """Import any supported image set into a uint8 N×C×H×W `.npy` and a CSV (index, name, subject, slice,
    files: the per-channel files as given, joined by `;`).

    The `.npy` is appended to as images arrive (never the whole set in memory); both files appear only
    when the whole set was read. `expect_shape` (C, H, W): the images must have it (e.g. the training
    set's). Raises InputError naming the file for any bad input.
    """
    found = scan(source, channels)
    writer, rows, hashes = None, [], []
    try:
        for images, new_rows, new_hashes in stream(found, size, workers, f"import {Path(source).name}"):
            if writer is None:
                _check_shape(images, expect_shape, found, new_rows)
                writer = NpyWriter(output_npy, images.shape[1:])
            writer.append(images)
            rows += new_rows
            hashes += new_hashes
        if writer is None:
            raise InputError(f"{source}: no images (every volume had too little above the intensity threshold)")
        table = pd.DataFrame(rows, columns=["name", "subject", "slice", "files"])
        table.insert(0, "index", np.arange(len(table)))
        table["slice"] = table["slice"].astype("Int64")
        writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    write_csv(table, output_csv)
    return Imported(found.source, found.format, found.channels, writer.count, writer.image_shape,
                    _fingerprints(found, hashes))


def _check_shape(images, expect_shape, found, rows) -> None:
    if expect_shape is not None and tuple(images.shape[1:]) != tuple(expect_shape):
        c, h, w = expect_shape
        raise InputError(f"{found.source}: images of {images.shape[3]}×{images.shape[2]} pixels and "
                         f"{images.shape[1]} channel(s) (first: {rows[0]['name']}), but the training images have "
                         f"{w}×{h} and {c}")


def import_dataset(train, output_dir, *, holdout=None, channels=None, size: int = 256,
                   workers: int = 1) -> dict[str, Imported]:
    """A prepared dataset folder (train.npy, holdout.npy, slices.csv, dataset.json, skipped.csv) from
    a training set and an optional held-out set (sources in any supported format, or scanned
    `ImageSet`s): what `medmem memorization`,
    `plant` and `calibrate` read. slices.csv gains the column `name` (file names as given).

    The held-out set takes the training set's channels. Subjects without a name pattern are the
    image's own name, so the held-out false-alarm rate is then cross-fitted by image.
    """
    sets = {"train": train if isinstance(train, ImageSet) else scan(train, channels)}
    if holdout is not None:
        sets["holdout"] = holdout if isinstance(holdout, ImageSet) else scan(holdout, sets["train"].channels)
    names = sets["train"].channels
    mr = [c for c in names if c in STUDY_CHANNELS and c != "seg"]
    kind = "brats" if len(mr) > 1 else "external"
    writer, shape, out = None, None, {}
    try:
        for split, found in sets.items():
            hashes, n = [], 0
            for images, rows, new_hashes in stream(found, size, workers, f"import {split}"):
                if writer is None:
                    shape = images.shape[1:]
                    side = shape[1] if shape[1] == shape[2] else tuple(shape[1:])  # dataset.json: S, or [H, W]
                    writer = DatasetWriter(output_dir, names, side, kind, ["name", "files"])
                elif n == 0:
                    _check_shape(images, shape, found, rows)
                writer.add(split, images, [{**r, "subject": r["subject"] or r["name"]} for r in rows])
                hashes += new_hashes
                n += len(images)
            if n == 0:
                raise InputError(f"{found.source}: no images")
            out[split] = Imported(found.source, found.format, names, n, tuple(shape), _fingerprints(found, hashes))
        writer.commit({"source": {s: str(f.source) for s, f in sets.items()}})
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return out


def split_by_subject(found: ImageSet, holdout_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(train, holdout) parts of a scanned folder, split by subject as `prepare cxr` splits patients
    (`cxr.split_patients`: a seeded share of subjects held out, none on both sides). An image without a
    subject in its name is its own subject. Raises InputError for arrays (no names to split by)."""
    if found.format == "array":
        raise InputError(f"{found.source}: an array file has no subjects to hold out; give a held-out set")
    keys = [item.subject or item.name for item in found.items]
    _, split = cxr.split_patients(keys, holdout_fraction, seed)
    parts = {s: ImageSet(found.source, found.format, found.channels, found.named,
                         [item for item, key in zip(found.items, keys) if split[key] == s], found.files, found.pick)
             for s in ("train", "holdout")}
    if not parts["train"].items:
        raise InputError(f"{found.source}: no training images left after holding out {holdout_fraction:g}")
    return parts["train"], parts["holdout"]


def prepare_images(source, output_dir, *, holdout=None, holdout_fraction: float = 0.0, seed: int = 0,
                   channels=None, size: int = 256, workers: int = 1) -> dict:
    """`medmem prepare images`: a dataset folder for the workflow from images in any supported format,
    held out by a second source (`holdout`) or by a seeded share of subjects (`holdout_fraction`).

    Writes `train.npy` / `holdout.npy` (N, C, H, W) uint8 (C: the channels found, or `channels` in
    that order; NIfTI volumes and BraTS subjects on a `size`×`size` canvas, pictures, DICOM and
    arrays at their own size), slices.csv (with `name` and `files`), skipped.csv and dataset.json
    (kind "brats" for two or more study MR channels, else "external"). holdout_fraction: share of
    subjects held out, in [0, 1) (`cxr.split_patients`, seeded by `seed`); workers: reading processes.
    Returns dataset.json's content. Raises InputError (one line naming the file) for bad input, both
    ways of holding out, or a held-out share that leaves no held-out image."""
    if holdout is not None and holdout_fraction:
        raise InputError("give either a held-out source or a holdout fraction, not both")
    found = scan(source, channels)
    held = holdout
    if holdout_fraction:
        found, held = split_by_subject(found, holdout_fraction, seed)
        if not held.items:
            raise InputError(f"{source}: a held-out share was requested but no held-out image is left (one subject "
                             "only); give a held-out source")
    sets = import_dataset(found, output_dir, holdout=held, channels=channels, size=size, workers=workers)
    if "holdout" not in sets:
        log.warning("%s: no held-out images: the calibration has no baseline", source)
    return read_dataset_info(output_dir)


def write_fingerprints(sets: dict[str, Imported], path) -> None:
    """One row per input file: set, source, file (relative), bytes, sha256."""
    frames = [f.fingerprints.assign(set=name, source=str(f.source)) for name, f in sets.items()]
    table = pd.concat(frames, ignore_index=True)[["set", "source", "file", "bytes", "sha256"]]
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)


def import_samples(source, output, *, info, workers: int = 1) -> Imported:
    """A generator's samples made elsewhere (`source`: a folder or file in any format `scan` reads) as the
    workflow's samples: `output` (.npy, uint8 N×C×H×W), `output`.csv (each image's name as given) and
    `output`.json (where they came from, their fingerprints).

    The images must match the training set described by `info` (its dataset.json): the same channels
    (by name where the source names them, else in order) and size. Raises InputError naming the file
    or the mismatch.
    """
    output = Path(output)
    dataset = read_dataset_info(info)
    if not dataset.get("channels") or not dataset.get("size"):
        raise InputError(f"{info}: no channels and size (not a prepared dataset's dataset.json)")
    channels, size = list(dataset["channels"]), int(dataset["size"])
    imported = import_images(source, output, output.with_suffix(".csv"), channels=channels, size=size,
                             workers=workers, expect_shape=(len(channels), size, size))
    record = {"sampler": "external", "source": str(source), "format": imported.format, "n": imported.n_images,
              "channels": channels, "files": len(imported.fingerprints), "sha256": imported.sha256}
    write_json(record, output.with_suffix(".json"))
    return imported
