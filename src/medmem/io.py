"""File helpers: atomic outputs, an appendable .npy writer, the dataset's metadata."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medmem.errors import InputError

_NPY_HEADER_BYTES = 256  # fixed so the header can be rewritten in place once the row count is known


def temporary_path(path: Path) -> Path:
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
        images = np.ascontiguousarray(images, dtype=self.dtype)
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"{self.path}: image shape {images.shape[1:]} != {self.image_shape}")
        self._file.write(memoryview(images).cast("B"))
        self.count += len(images)

    def commit(self) -> None:
        self._file.seek(0)
        self._file.write(self._header(self.count))
        self._file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._file.close()
        if self.tmp.exists():
            self.tmp.unlink()


def open_images(path, what: str = "images") -> np.ndarray:
    """Memory-map a uint8 N×C×H×W .npy file, with a one-line error for anything else."""
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


def read_dataset_info(data_dir) -> dict:
    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
