"""Generators: networks only (training and sampling live in medmem.training and medmem.sampling)."""

from __future__ import annotations


def count_parameters(module) -> int:
    """Number of scalar parameters (trainable or not) of a torch.nn.Module; buffers not counted."""
    return sum(p.numel() for p in module.parameters())
