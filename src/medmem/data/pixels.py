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


def _centre_span(length: int, size: int) -> tuple[int, int]:
    """(before, after) padding (positive) or cropping (negative); an odd difference goes after."""
    diff = size - length
    before = diff // 2 if diff >= 0 else -((-diff) // 2)
    return before, diff - before


def pad_or_crop(image: np.ndarray, size: int, axes=(0, 1)) -> np.ndarray:
    """Centre `image` on a size×size canvas along `axes`: zero-pad where smaller, crop where larger.

    For the study's 240×240 BraTS slices and size 256 this pads 8 pixels on every side. An odd
    difference puts the extra pixel after (bottom/right): 239 -> 256 pads 8 before and 9 after;
    257 -> 256 crops the last row.
    """
    out = image
    for axis in axes:
        before, after = _centre_span(out.shape[axis], size)
        if before < 0 or after < 0:
            start = -min(before, 0)
            stop = out.shape[axis] + min(after, 0)
            out = np.take(out, np.arange(start, stop), axis=axis)
        if before > 0 or after > 0:
            widths = [(0, 0)] * out.ndim
            widths[axis] = (max(before, 0), max(after, 0))
            out = np.pad(out, widths)
    return out
