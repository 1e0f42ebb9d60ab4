"""Training-set augmentation both generators share: per-image horizontal flips and integer
translations with zero fill, built from indexing only (exact, and R1's double backward through it
stays exact). The study used none; the field reports that augmentation reduces memorization
(Dar et al. 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-sample horizontal flip, then integer translation with zero fill, by indexing only.

    `images` (N, C, H, W), any float dtype, any device; `flip` (N,) bool: mirror left-right;
    `shift` (N, 2) integers (rows, columns): the content moves down by shift[:, 0] and right by
    shift[:, 1] pixels (negative: up, left); pixels moved in from outside are 0. Returns a new
    tensor of the input's shape and dtype.
    """
    n, c, h, w = images.shape
    t = int(shift.abs().max()) if shift.numel() else 0
    out = torch.where(flip[:, None, None, None], images.flip(3), images)
    if t == 0:
        return out
    padded = F.pad(out, [t, t, t, t])
    rows = (torch.arange(h, device=images.device)[None, :] + t - shift[:, 0:1]).clamp(0, h + 2 * t - 1)
    cols = (torch.arange(w, device=images.device)[None, :] + t - shift[:, 1:2]).clamp(0, w + 2 * t - 1)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def augment_params(gen: torch.Generator, n: int, flip: bool, translate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The random draws of `augment` for n images from `gen` (CPU), in StyleGAN2Task's order: (flip (n,)
    bool, each True with probability 0.5 when `flip`, else all False; shift (n, 2) int64, uniform in
    [−translate, translate] per axis)."""
    flips = torch.rand(n, generator=gen) < (0.5 if flip else 0.0)
    shift = torch.randint(-translate, translate + 1, (n, 2), generator=gen)
    return flips, shift
