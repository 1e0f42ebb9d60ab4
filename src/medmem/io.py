"""File helpers: atomic outputs, an appendable .npy writer, the dataset's metadata."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medmem.errors import InputError

log = logging.getLogger(__name__)
_NPY_HEADER_BYTES = 256  # fixed so the header can be rewritten in place once the row count is known


def temporary_path(path: Path) -> Path:
    """The temporary name `path` is written under first: .NAME.tmp-PID in the same folder (so the
    final rename stays on one file system)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_csv(df: pd.DataFrame, path) -> None:
    """Atomically write `df` as CSV without its index."""
    with atomic_output(path) as tmp:
        df.to_csv(tmp, index=False)


def strict_json(obj):
    """`obj` with every non-finite float (NaN, ±inf, also numpy's) replaced by None (JSON null)."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(obj, path) -> None:
    """Atomically write strict JSON: non-finite numbers become null (never a bare NaN, which
    `json.dumps` writes by default and no strict JSON reader accepts)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


class NpyWriter:
    """Append uint8 images (n, C, H, W) to a .npy file whose length is unknown in advance.

    Writes to a temporary name; `commit()` fixes the header and renames. Never holds the array.
    """

    def __init__(self, path, image_shape: tuple[int, ...], dtype=np.uint8):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_path(self.path)
        self.image_shape = tuple(image_shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._file = open(self.tmp, "wb")
        self._file.write(self._header(0))

    def _header(self, n: int) -> bytes:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (n, *self.image_shape)}
        text = repr(header).encode("latin1")
        magic = b"\x93NUMPY\x01\x00"
        pad = _NPY_HEADER_BYTES - len(magic) - 2 - len(text) - 1
        if pad < 0:
            raise ValueError(f"{self.path}: shape {header['shape']} too long for the .npy header")
        text = text + b" " * pad + b"\n"
        return magic + len(text).to_bytes(2, "little") + text

    def append(self, images: np.ndarray) -> None:
        """Append images (k, *image_shape), cast to the writer's dtype. Raises ValueError for
        another image shape."""
        images = np.ascontiguousarray(images, dtype=self.dtype)
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"{self.path}: image shape {images.shape[1:]} != {self.image_shape}")
        self._file.write(memoryview(images).cast("B"))
        self.count += len(images)

    def commit(self) -> None:
        """Write the final row count into the header and rename the file to its name."""
        self._file.seek(0)
        self._file.write(self._header(self.count))
        self._file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Close and delete the temporary file; nothing appears under the name."""
        self._file.close()
        if self.tmp.exists():
            self.tmp.unlink()


def open_images(path, what: str = "images") -> np.ndarray:
    """Memory-map a uint8 N×C×H×W .npy file (read-only). Raises InputError (one line naming the
    file; `what` says what it should hold) when it is missing, unreadable, not 4-D, not uint8 or
    empty."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file does not exist")
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as exc:  # numpy raises several types for corrupt headers
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    if arr.ndim != 4:
        raise InputError(f"{path}: expected N×C×H×W images, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{path}: expected uint8 images, got {arr.dtype}")
    if arr.shape[0] == 0:
        raise InputError(f"{path}: {what} file holds 0 images")
    return arr


def read_dataset_info(path) -> dict:
    """A prepared dataset's dataset.json (`path`: the file, or the folder holding it) as a dict; {} when
    there is none. Raises InputError naming the file when it is not a JSON object."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "dataset.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable dataset.json ({exc})") from None
    if not isinstance(info, dict):
        raise InputError(f"{path}: not a dataset.json (a JSON object)")
    return info


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
    """The files of a prepared dataset that the stages read (paths; they need not all exist)."""

    train: Path  # uint8 N×C×H×W training images
    slices: Path  # one row per image: index, split, subject, slice, ...
    info: Path  # dataset.json: channels, size, counts
    holdout: Path  # uint8 M×C×H×W held-out images


def dataset_files(train, slices=None, info=None, holdout=None) -> DatasetFiles:
    """A prepared dataset's files: `train` is train.npy (the others default to its neighbours) or, as
    before, the folder holding all four; a file given by name wins over the folder's."""
    train = Path(train)
    folder = train if train.is_dir() or train.suffix != ".npy" else train.parent
    return DatasetFiles(train=train if train.suffix == ".npy" else folder / "train.npy",
                        slices=Path(slices) if slices else folder / "slices.csv",
                        info=Path(info) if info else folder / "dataset.json",
                        holdout=Path(holdout) if holdout else folder / "holdout.npy")


def channel_names(channels: int, *candidates) -> list[str]:
    """Names for the `channels` channels of an image set: the first of `candidates` (lists of names,
    e.g. the command line's, the network's `channel_names`, dataset.json's `channels`; None or empty
    ones are skipped) that holds exactly `channels` names, as strings; else "0", "1", … "C-1".
    A non-empty candidate of another length is skipped with a warning."""
    for names in candidates:
        if not names:
            continue
        names = [str(name) for name in names]
        if len(names) == channels:
            return names
        log.warning("%d channel names %s for %d channels: not used", len(names), names, channels)
    return [str(c) for c in range(channels)]


def file_digest(path, chunk: int = 1 << 24) -> str:
    """The first 16 hex digits of a file's SHA-256, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


class ImageShards:
    """Several uint8 N×C×H×W arrays (memory-mapped shards) seen as one, without copying them.

    Supports what the readers of sample files use: `len`, `shape`, `dtype`, `ndim`, indexing by an
    integer, a slice (step 1: another ImageShards, still lazy, or the shard's own memory-mapped
    view when the slice lies in one shard), an integer array (the rows, gathered shard by shard),
    or a tuple of those and further indices; `reshape(n, ...)` keeping the first axis;
    `np.asarray(...)` reads everything.
    """

    def __init__(self, parts: list):
        if not parts:
            raise ValueError("no shards")
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.dtype = parts[0].dtype
        self.shape = (int(self.starts[-1]), *parts[0].shape[1:])
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def reshape(self, *shape):
        """Every shard reshaped to (len(shard), *shape[1:]), lazily. Raises ValueError unless
        shape[0] is the total length."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        if shape[0] != len(self):
            raise ValueError(f"reshape keeps the first axis ({len(self)}), got {shape}")
        return ImageShards([p.reshape(len(p), *shape[1:]) for p in self.parts])

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(p) for p in self.parts])
        return out if dtype is None else out.astype(dtype)

    def _locate(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        return part, i - int(self.starts[part])

    def __getitem__(self, key):
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
            head = self[first]
            if isinstance(head, ImageShards):
                head = np.asarray(head)
            return head[rest] if isinstance(first, (int, np.integer)) else head[(slice(None), *rest)]
        if isinstance(key, (int, np.integer)):
            part, offset = self._locate(int(key))
            return self.parts[part][offset]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return np.asarray(self[np.arange(start, stop, step)])
            stop = max(start, stop)
            pieces = []
            for p, part in enumerate(self.parts):
                lo, hi = max(start, self.starts[p]), min(stop, self.starts[p + 1])
                if lo < hi:
                    pieces.append(part[lo - self.starts[p]:hi - self.starts[p]])
            if len(pieces) == 1:
                return pieces[0]
            if not pieces:
                return self.parts[0][:0]
            return ImageShards(pieces)
        index = np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = np.where(index < 0, index + len(self), index).astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        out = np.empty((*index.shape, *self.shape[1:]), self.dtype)
        which = np.searchsorted(self.starts, index, side="right") - 1
        for p in np.unique(which):
            mask = which == p
            out[mask] = self.parts[p][index[mask] - self.starts[p]]
        return out


def open_image_shards(paths, what: str = "images"):
    """Memory-map one or more uint8 N×C×H×W .npy files (the shards of one sample set, in order) as one
    array, lazily: a single path gives its memory map; several give an ImageShards, never a copy.

    Every file is checked as `open_images` checks it (same one-line errors naming the file); the
    shards must agree in C×H×W, else an InputError names the first that differs.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise InputError(f"no {what} files given")
    parts = [open_images(p, what) for p in paths]
    if len(parts) == 1:
        return parts[0]
    for path, part in zip(paths[1:], parts[1:]):
        if part.shape[1:] != parts[0].shape[1:]:
            raise InputError(f"{path}: images of shape {part.shape[1:]} do not match the first shard "
                             f"{paths[0]} ({parts[0].shape[1:]})")
    return ImageShards(parts)


def kimg_text(value: float) -> str:
    """kimg as file names write it (segments, kept networks; config, training and the workflow alike):
    0.032 → '0.032', 40.0 → '40' (rounded to 6 decimals, trailing zeros dropped)."""
    return f"{round(value, 6):.6f}".rstrip("0").rstrip(".")


def kept_network_name(kimg: float) -> str:
    """The file name of the network kept at `kimg` (config keep_kimg): network-<kimg>kimg.pt."""
    return f"network-{kimg_text(kimg)}kimg.pt"
