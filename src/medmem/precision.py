"""Numeric precision of the generators: float32, or bf16 autocast on CUDA.

bf16 autocast is the modern form of NVlabs' mixed precision (fp16 in StyleGAN2's four highest
resolutions, the rest in float32). On the CPU bf16 matrix products are about 500× slower than
float32 (no native support), so `bf16` there runs in float32 and says so.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch

log = logging.getLogger(__name__)
PRECISIONS = ("float32", "bf16")


def effective_precision(precision: str, device) -> str:
    """The precision that will actually run: `bf16` only on CUDA. Raises ValueError for an unknown name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "bf16" and torch.device(device).type != "cuda":
        log.info("bf16 asked for on %s: running in float32 (bf16 is not native on the CPU)", device)
        return "float32"
    return precision


def autocast(precision: str, device):
    """A context manager: bf16 autocast for `bf16` on CUDA, nothing otherwise."""
    if effective_precision(precision, device) == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def float32(device):
    """A context manager that switches any enclosing autocast off (the regularisation passes)."""
    return torch.autocast(torch.device(device).type, enabled=False)
