"""Numeric precision of the generators: float32, or bf16 autocast on CUDA.

bf16 autocast is the modern form of NVlabs' mixed precision (fp16 in StyleGAN2's four highest
resolutions, the rest in float32). On the CPU bf16 matrix products are about 500× slower than
float32 (no native support), so `bf16` there runs in float32 and says so.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

import torch

log = logging.getLogger(__name__)
PRECISIONS = ("float32", "bf16")


def effective_precision(precision: str, device) -> str:
    """The precision that will actually run on `device` (a str or torch.device): `bf16` only on
    CUDA, float32 otherwise (logged). Raises ValueError for a name not in PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "bf16" and torch.device(device).type != "cuda":
        log.info("bf16 asked for on %s: running in float32 (bf16 is not native on the CPU)", device)
        return "float32"
    return precision


def autocast(precision: str, device) -> AbstractContextManager:
    """A context manager: bf16 autocast for `bf16` on CUDA, nothing otherwise. Raises ValueError
    for an unknown precision."""
    if effective_precision(precision, device) == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def resolve(precision: str, device) -> tuple[str, AbstractContextManager]:
    """(`effective_precision`, the matching `autocast`) for a generator on `device`: what every
    training task and sampler records and runs under. The context manager may be entered again
    after it exits (not nested). Raises ValueError for an unknown precision."""
    precision = effective_precision(precision, device)
    return precision, autocast(precision, device)


def float32(device) -> AbstractContextManager:
    """A context manager that switches any enclosing autocast off on `device`'s type (the
    regularisation passes, the diffusion UNet's timestep embedding); nothing where the device type
    has no autocast (e.g. "meta")."""
    kind = torch.device(device).type
    if not torch.amp.is_autocast_available(kind):
        return nullcontext()
    return torch.autocast(kind, enabled=False)
