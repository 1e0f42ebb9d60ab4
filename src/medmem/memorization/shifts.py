"""Integer translations with zero fill (numpy only: the report uses them without torch)."""

from __future__ import annotations

import numpy as np


def translations(shift: int) -> list[tuple[int, int]]:
    """(dy, dx) for |dy|, |dx| <= shift: the identity first, then by distance, then row-major."""
    pairs = [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)]
    return sorted(pairs, key=lambda p: (max(abs(p[0]), abs(p[1])), abs(p[0]) + abs(p[1]), p))


def translate(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[..., y, x] = images[..., y − dy, x − dx], 0 where that falls outside (zero fill).

    images: (..., H, W) any dtype; dy, dx: pixels (down and right positive). Same shape and dtype;
    all 0 when |dy| >= H or |dx| >= W.
    """
    out = np.zeros_like(images)
    H, W = images.shape[-2:]
    ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
    xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
    if abs(dy) < H and abs(dx) < W:
        out[..., yd, xd] = images[..., ys, xs]
    return out


def variants(shift: int, flip: bool) -> list[tuple[bool, int, int]]:
    """(mirrored, dy, dx) of every query variant searched: unmirrored ones first."""
    return [(m, dy, dx) for m in ([False, True] if flip else [False]) for dy, dx in translations(shift)]
