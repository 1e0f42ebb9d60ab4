"""Recognising an image set's format and listing its images, before any pixel is read.

The formats and naming rules are described in `medmem.audit.images`; this module finds them:
`scan(source, channels)` returns an `ImageSet` (format, channel names, one `Item` per image or
volume, every input file). OS debris is left out through `medmem.data.files`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medmem.data import brats
from medmem.data.files import input_dirs, input_files, is_debris
from medmem.errors import InputError

log = logging.getLogger(__name__)

PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
ARRAY_SUFFIXES = {".npy", ".npz"}
# the study's channel folders (any case) -> medmem's channel names, in medmem's channel order
STUDY_CHANNELS = {"t1": "t1", "t2": "t2", "flair": "flair", "t1ce": "t1ce", "seg": "seg"}
CHANNEL_ORDER = ["t1", "t2", "flair", "t1ce", "seg"]
MAX_CHANNELS = 16
FILES_SEP = ";"  # between the per-channel file names of one image in the `files` column


def is_os_debris(path: Path) -> bool:
    """True when any part of the (relative) path is hidden or OS debris (`medmem.data.files.is_debris`)."""
    return any(is_debris(part) for part in Path(path).parts)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _files(folder: Path) -> list[Path]:
    return input_files(folder, recursive=True)


_NAME_PATTERNS = [re.compile(r"^subject_(?P<subject>[^_]+)_slice_(?P<slice>\d+)", re.IGNORECASE),
                  re.compile(r"^(?P<subject>.+?)[_-]slice[_-]?(?P<slice>\d+)", re.IGNORECASE),
                  re.compile(r"^(?P<subject>person\d+)_", re.IGNORECASE)]


def parse_name(name: str) -> tuple[str | None, int | None]:
    """(subject, slice) from a file name, None where the name has none.

    `Subject_12_slice_40_t1.png` -> ("12", 40); `BraTS2021_00001_slice72.png` -> ("BraTS2021_00001", 72);
    Kermany `person3_bacteria_10.jpeg` -> ("person3", None); `seed0042.png` -> (None, None).
    """
    for pattern in _NAME_PATTERNS:
        match = pattern.match(name)
        if match:
            found = match.groupdict()
            return found["subject"], int(found["slice"]) if found.get("slice") else None
    return None, None


@dataclass
class Item:
    """One unit of work: a picture or DICOM per channel (one image) or a volume/subject (its slices)."""
    kind: str  # "picture" (incl. DICOM), "volume" or "subject"
    paths: tuple  # one per channel for pictures; the file or subject folder otherwise
    name: str  # as given: the file's path relative to the source (channel files: the matched name)
    subject: str | None = None
    slice: int | None = None
    files: tuple = ()  # per channel, the file as given (path relative to the source)


@dataclass
class ImageSet:
    """A scanned source: what it holds, before any pixel is read."""
    source: Path
    format: str  # "study", "pictures", "dicom", "nifti", "brats", "array"
    channels: list[str]
    named: bool  # channel names come from the source (study layout, BraTS) rather than positions
    items: list[Item] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every input file (for the fingerprints)
    pick: list[int] | None = None  # channels kept of what each item reads (BraTS subjects read all five)


def _select(found: ImageSet, channels) -> ImageSet:
    if not channels:
        return found
    wanted = [STUDY_CHANNELS.get(c.lower(), c.lower()) for c in channels]
    if not found.named:
        if len(wanted) != len(found.channels):
            raise InputError(f"{found.source}: {len(found.channels)} unnamed channel(s), but channels "
                             f"{', '.join(channels)} were asked for (unnamed channels are named in order: "
                             "as many names as channels)")
        found.channels = wanted
        return found
    missing = [c for c in wanted if c not in found.channels]
    if missing:
        raise InputError(f"{found.source}: no channel {', '.join(missing)} (it has {', '.join(found.channels)})")
    keep = [found.channels.index(c) for c in wanted]
    if found.format == "study":
        for item in found.items:
            item.paths, item.files = tuple(item.paths[i] for i in keep), tuple(item.files[i] for i in keep)
    else:
        found.pick = keep
    found.channels = wanted
    return found


def scan(source, channels=None) -> ImageSet:
    """Recognise `source`'s format and list its images (in a fixed, sorted order); reads no pixels.

    `channels`: names to keep, in this order (study layout, BraTS), or names for unnamed channels.
    Raises InputError for a missing source, an empty or mixed folder, or a channel missing for some image.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: does not exist")
    if source.is_file():
        suffix = _suffix(source)
        if suffix in ARRAY_SUFFIXES:
            return _select(_scan_array(source), channels)
        kinds = {**{s: "pictures" for s in PICTURE_SUFFIXES}, **{s: "dicom" for s in DICOM_SUFFIXES},
                 ".nii": "nifti", ".nii.gz": "nifti"}
        if suffix not in kinds:
            raise InputError(f"{source}: not an image set (expected a folder, .npy, .npz, .nii[.gz], .dcm, "
                             f".png, .jpg or .tif)")
        kind = "volume" if kinds[suffix] == "nifti" else "picture"
        return _select(ImageSet(source, kinds[suffix], ["image"], False, [_item(kind, source, source.parent)],
                                [source]), channels)
    sub = {p.name.lower(): p for p in input_dirs(source)}
    if any(name in STUDY_CHANNELS for name in sub):
        return _select(_scan_study(source, sub), channels)
    files = _files(source)
    subjects = [p for p in sub.values() if any(brats.is_nifti(f) for f in input_files(p))]
    if subjects:
        items = [Item("subject", (p,), p.name, p.name) for p in sorted(subjects)]
        used = [f for f in files if brats.is_nifti(f) and f.parent in set(subjects)]
        return _select(ImageSet(source, "brats", list(brats.CHANNELS), True, items, used), channels)
    by_kind = {"pictures": [f for f in files if _suffix(f) in PICTURE_SUFFIXES],
               "dicom": [f for f in files if _suffix(f) in DICOM_SUFFIXES],
               "nifti": [f for f in files if brats.is_nifti(f)],
               "array": [f for f in files if _suffix(f) in ARRAY_SUFFIXES]}
    present = {k: v for k, v in by_kind.items() if v}
    if not present:
        raise InputError(f"{source}: no images found (expected PNG, JPEG, TIFF, DICOM, NIfTI, .npy or .npz files, "
                         "or the study's T1/ T2/ FLAIR/ T1CE/ Seg/ folders)")
    if "array" in present:
        raise InputError(f"{present['array'][0]}: arrays are read one file at a time: give the file itself")
    if "nifti" in present and len(present) > 1:
        other = next(v[0] for k, v in present.items() if k != "nifti")
        raise InputError(f"{other}: a folder of NIfTI volumes holds no other images")
    ignored = len(files) - sum(len(v) for v in present.values())
    if ignored:
        log.info("%s: %d file(s) that are not images are ignored", source, ignored)
    if "nifti" in present:
        items = [_item("volume", f, source) for f in present["nifti"]]
        return _select(ImageSet(source, "nifti", ["image"], False, items, present["nifti"]), channels)
    images = sorted(present.get("pictures", []) + present.get("dicom", []))
    fmt = "dicom" if "pictures" not in present else "pictures"
    return _select(ImageSet(source, fmt, ["image"], False, [_item("picture", f, source) for f in images], images),
                   channels)


def _item(kind: str, path: Path, root: Path) -> Item:
    name = path.relative_to(root).as_posix()
    stem = path.name[: -len(_suffix(path))] if _suffix(path) else path.name
    subject, slice_ = parse_name(stem)
    if kind == "volume":
        subject = subject or stem
    return Item(kind, (path,), name, subject, slice_, (name,))


def _scan_study(source: Path, sub: dict[str, Path]) -> ImageSet:
    """One folder per channel; images matched across channels by name without the `_<mod>` suffix."""
    channels = [c for c in CHANNEL_ORDER if c in sub]
    clashes = [p for name, p in sub.items() if name not in STUDY_CHANNELS]
    if clashes:
        log.info("%s: folder(s) %s are not channels and are ignored", source, ", ".join(p.name for p in clashes))
    per_channel: dict[str, dict[str, Path]] = {}
    for c in channels:
        folder = sub[c]
        keys: dict[str, Path] = {}
        for f in _files(folder):
            if _suffix(f) not in PICTURE_SUFFIXES:
                continue
            stem = f.name[: -len(_suffix(f))]
            key = re.sub(rf"_{c}$", "", stem, flags=re.IGNORECASE)
            if key in keys:
                raise InputError(f"{f}: same image name as {keys[key]} in {folder.name}/")
            keys[key] = f
        if not keys:
            raise InputError(f"{folder}: no PNG, JPEG or TIFF images")
        per_channel[c] = keys
    first = per_channel[channels[0]]
    for c in channels:
        for other in channels:
            extra = sorted(set(per_channel[c]) - set(per_channel[other]))
            if extra:
                raise InputError(f"{per_channel[c][extra[0]]}: no matching image in {sub[other].name}/ "
                                 f"({len(extra)} image(s) of {sub[c].name}/ have none)")
    items = []
    for key in sorted(first):
        subject, slice_ = parse_name(key)
        paths = tuple(per_channel[c][key] for c in channels)
        items.append(Item("picture", paths, key, subject, slice_, tuple(p.relative_to(source).as_posix() for p in paths)))
    files = [p for c in channels for p in per_channel[c].values()]
    return ImageSet(source, "study", channels, True, items, files)


def _array_layout(shape: tuple, path: Path) -> str:
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise InputError(f"{path}: expected images N×C×H×W, N×H×W×C or N×H×W, got shape {shape}")
    first, last = shape[1] <= MAX_CHANNELS and shape[3] > MAX_CHANNELS, shape[3] <= MAX_CHANNELS < shape[1]
    if first == last:
        raise InputError(f"{path}: cannot tell N×C×H×W from N×H×W×C in shape {shape} (channels: at most "
                         f"{MAX_CHANNELS}, image sides: more)")
    return "NCHW" if first else "NHWC"


def _open_array(path: Path) -> np.ndarray:
    try:
        if _suffix(path) == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            key = "arr_0" if "arr_0" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InputError(f"{path}: {len(keys)} arrays ({', '.join(keys[:5])}) and none named arr_0")
            mapped = _npz_member_memmap(path, key)
            return mapped if mapped is not None else archive[key]  # compressed: read whole
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable array file ({type(exc).__name__}: {exc})") from None


def _npz_member_memmap(path: Path, key: str) -> np.ndarray | None:
    """Memory-map an array stored uncompressed in an .npz (what `np.savez` writes), else None.

    A stored ZIP member's bytes lie in the file as they are: after its local header (30 bytes, the
    name, the extra field: ZIP spec 4.3.7) comes the .npy header, then the data.
    """
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        f.seek(start)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if fortran or dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def _scan_array(path: Path) -> ImageSet:
    array = _open_array(path)
    if array.dtype != np.uint8:
        raise InputError(f"{path}: expected uint8 images, got {array.dtype}")
    layout = _array_layout(array.shape, path)
    c = 1 if layout == "NHW" else array.shape[1 if layout == "NCHW" else 3]
    if len(array) == 0:
        raise InputError(f"{path}: no images")
    found = ImageSet(path, "array", [str(i) for i in range(c)], False, [], [path])
    found.array, found.layout = array, layout  # type: ignore[attr-defined]
    if c == 3 and _channels_equal(array, layout):
        found.channels = ["image"]
    return found


def _as_nchw(block: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NHW":
        return block[:, None]
    return block if layout == "NCHW" else block.transpose(0, 3, 1, 2)


def _channels_equal(array: np.ndarray, layout: str, step: int = 256) -> bool:
    for start in range(0, len(array), step):
        block = _as_nchw(np.asarray(array[start:start + step]), layout)
        if not ((block[:, 0] == block[:, 1]).all() and (block[:, 0] == block[:, 2]).all()):
            return False
    return True
