"""Pixel conversions shared by the BraTS and chest x-ray preparation."""

from __future__ import annotations

import numpy as np


def matlab_uint8(x: np.ndarray) -> np.ndarray:
    """Convert to uint8 as MATLAB's `uint8()` does: round half away from zero, saturate, NaN -> 0.

    numpy's `round` rounds half to even (2.5 -> 2); MATLAB gives 3. Only exact halves differ.
    """
    x = np.asarray(x, dtype=np.float64)
    whole = np.trunc(x)
    rounded = np.where(np.abs(x - whole) == 0.5, whole + np.sign(x), np.round(x))
    rounded = np.nan_to_num(rounded, nan=0.0)
    return np.clip(rounded, 0, 255).astype(np.uint8)


def canvas_slices(length: int, size: int) -> tuple[slice, slice]:
    """Where a centred axis of `length` goes on a canvas of `size`: (source slice, canvas slice).

    Zero-pad where smaller, crop where larger; an odd difference puts the extra pixel after
    (bottom/right): 239 -> 256 pads 8 before and 9 after; 257 -> 256 crops the last row.
    For the study's 240×240 BraTS slices and size 256 this pads 8 pixels on every side.
    """
    if length <= size:
        before = (size - length) // 2
        return slice(0, length), slice(before, before + length)
    before = (length - size) // 2
    return slice(before, before + size), slice(0, size)


def pad_or_crop(image: np.ndarray, size: int, axes=(0, 1)) -> np.ndarray:
    """Centre `image` on a size×size canvas along `axes` (see `canvas_slices`): zero padding, or a
    centred crop; same dtype, the other axes unchanged."""
    shape = list(image.shape)
    source, target = [slice(None)] * image.ndim, [slice(None)] * image.ndim
    for axis in axes:
        source[axis], target[axis] = canvas_slices(image.shape[axis], size)
        shape[axis] = size
    out = np.zeros(shape, image.dtype)
    out[tuple(target)] = image[tuple(source)]
    return out
