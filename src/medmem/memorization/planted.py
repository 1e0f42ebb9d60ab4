"""Planted copies: training images copied exactly and with small perturbations, to measure whether
the highest-correlation search finds a copy (the study never checked this)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _shift(images: np.ndarray, pixels: int) -> np.ndarray:
    """Move the content down and right by `pixels`, zero-filled (no wrap-around)."""
    out = np.zeros_like(images)
    out[..., pixels:, pixels:] = images[..., :-pixels, :-pixels]
    return out


PERTURBATIONS = {
    "exact": lambda x, rng: x.copy(),
    "noise": lambda x, rng: _clip(x + rng.normal(0.0, 5.0, x.shape)),  # σ = 5 grey levels
    "shift_1px": lambda x, rng: _shift(x, 1),
    "shift_2px": lambda x, rng: _shift(x, 2),
    "brightness_contrast": lambda x, rng: _clip(x * 1.15 + 10),
    "flip": lambda x, rng: x[..., ::-1].copy(),  # left-right
}


def plant_copies(train: np.ndarray, per_perturbation: int, seed: int,
                 perturbations=tuple(PERTURBATIONS)) -> tuple[np.ndarray, pd.DataFrame]:
    """The same K randomly chosen training images under every perturbation: (images, manifest)."""
    rng = np.random.default_rng(seed)
    k = min(per_perturbation, len(train))
    sources = np.sort(rng.choice(len(train), size=k, replace=False))
    originals = np.asarray(train[sources])
    images, rows = [], []
    for name in perturbations:
        images.append(PERTURBATIONS[name](originals, rng))
        rows += [{"perturbation": name, "source_index": int(s)} for s in sources]
    manifest = pd.DataFrame(rows)
    manifest.insert(0, "query", np.arange(len(manifest)))
    return np.concatenate(images), manifest
