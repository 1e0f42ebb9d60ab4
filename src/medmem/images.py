"""Generator output to pixels: the two uint8 conversions the study's code uses, and preview grids.

The generators produce float images in [-1, 1] (N, C, H, W). The study's two codebases turn them
into uint8 differently, and both are kept bit for bit:

- StyleGAN2 (NVlabs/stylegan3 gen_images.py, line 136): `(x * 127.5 + 128).clamp(0, 255)` then a
  truncating cast, i.e. (x + 1) · 127.5 rounded half up: `to_uint8_rounded`;
- guided-diffusion (openai/guided-diffusion scripts/image_sample.py, line 60):
  `((x + 1) * 127.5).clamp(0, 255)` then a truncating cast, i.e. rounded down: `to_uint8_truncated`.

They differ by one grey level for about half of all values. Which one a generator uses is `TO_UINT8`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medmem.io import atomic_output, channel_names as resolve_channel_names


def to_uint8_rounded(images: torch.Tensor) -> np.ndarray:
    """StyleGAN2's conversion: clamp(x · 127.5 + 128, 0, 255) cast to uint8 (truncation of the
    +128 offset rounds half up). `images`: a tensor of any shape and float dtype, nominally in
    [-1, 1], on any device; computed in float32. Returns a numpy uint8 array of the same shape,
    on the CPU (−1 → 0, 0 → 128, 1 → 255)."""
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def to_uint8_truncated(images: torch.Tensor) -> np.ndarray:
    """guided-diffusion's conversion: clamp((x + 1) · 127.5, 0, 255) cast to uint8 (rounded down).
    `images`: a tensor of any shape and float dtype, nominally in [-1, 1], on any device; computed
    in float32. Returns a numpy uint8 array of the same shape, on the CPU (−1 → 0, 0 → 127, 1 → 255)."""
    return ((images.float() + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


# the conversion each generator type's samples and snapshots use (the study's, per codebase)
TO_UINT8 = {"stylegan2": to_uint8_rounded, "diffusion": to_uint8_truncated}


def grid(images: np.ndarray, channel: int) -> np.ndarray:
    """One channel of uint8 images (n, C, H, W) tiled row-major into a (rows·H, cols·W) uint8 array,
    cols = ⌈√n⌉ and rows = ⌈n / cols⌉; cells after the n-th image stay 0 (black)."""
    n, _, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * h, cols * w), np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i, channel]
    return out


def save_grid(images: np.ndarray, folder, stem: str, channel_names=()) -> list[Path]:
    """Write one greyscale PNG per channel, FOLDER/STEM_NAME.png, of the uint8 images (n, C, H, W)
    tiled by `grid`. NAME is the channel's name from `channel_names` when it holds exactly C names,
    else its index "0".."C-1" (`medmem.io.channel_names`). Each file is written atomically; the
    folder is created. Returns the paths written, in channel order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = resolve_channel_names(images.shape[1], channel_names)
    paths = []
    for ch, name in enumerate(names):
        path = folder / f"{stem}_{name}.png"
        with atomic_output(path) as tmp:
            Image.fromarray(grid(images, ch)).save(tmp, format="PNG")
        paths.append(path)
    return paths
