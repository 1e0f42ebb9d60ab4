"""Chest radiograph phantoms: body, lungs, heart, mediastinum and spine, ribs, clavicles, diaphragm,
and patchy consolidations for the pneumonia class. Rendered as an attenuation map in [0, 1]
(bright = dense, as a radiograph is displayed), then written as Kermany-style JPEGs or as DICOM.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _soft(mask_distance: np.ndarray, width: float) -> np.ndarray:
    """Smooth step: 1 inside (distance < 0), 0 outside, over `width`."""
    return 1.0 / (1.0 + np.exp(np.clip(mask_distance / max(width, 1e-6), -50, 50)))


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-12)


def chest_radiograph(rng, height: int, width: int, pneumonia: bool) -> np.ndarray:
    """A PA chest radiograph phantom: (height, width) float64 in [0, 1], bright = dense, drawn from
    `rng` (numpy Generator); `pneumonia` adds patchy consolidations."""
    v, u = np.meshgrid(np.linspace(0, 1, height), np.linspace(-1, 1, width) * width / height * 0.8,
                       indexing="ij")
    # patient placement and build vary from image to image
    u = (u - rng.normal(0, 0.04)) / rng.uniform(0.9, 1.1)
    v = (v - rng.normal(0, 0.03)) / rng.uniform(0.92, 1.05)
    px = 1.0 / height
    image = np.full((height, width), 0.04)

    body_half_width = 0.78 + 0.06 * np.tanh((v - 0.15) * 8)
    body = _soft(np.abs(u) - body_half_width, 3 * px)
    image += 0.36 * body * _soft(0.06 - v, 4 * px)

    lungs = np.zeros_like(image)
    for side in (-1, 1):
        cu, cv = side * rng.uniform(0.33, 0.40), rng.uniform(0.46, 0.52)
        au, av = rng.uniform(0.22, 0.27), rng.uniform(0.30, 0.36)
        dome = 0.78 + 0.05 * side * rng.uniform(0.5, 1.5) + 0.04 * ((u - cu) / au) ** 2
        r = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
        lungs = np.maximum(lungs, _soft(r - 1.0, 0.04) * _soft(v - dome, 3 * px))
    vessels = np.clip(_smooth_noise(rng, image.shape, 1 + height / 150), 0, 3) / 3
    image -= 0.24 * lungs * (1 - 0.25 * vessels)

    heart_r = np.sqrt(((u - rng.uniform(0.06, 0.14)) / rng.uniform(0.22, 0.28)) ** 2
                      + ((v - rng.uniform(0.62, 0.68)) / rng.uniform(0.15, 0.19)) ** 2)
    image += 0.16 * _soft(heart_r - 1.0, 0.05)
    image += 0.14 * _soft(np.abs(u - 0.02 * np.sin(v * 3)) - 0.085, 3 * px) * _soft(0.05 - v, 4 * px)
    vertebrae = 0.5 + 0.5 * np.cos(v * 2 * np.pi * rng.uniform(11, 13))
    image += 0.08 * _soft(np.abs(u) - 0.05, 2 * px) * vertebrae
    image += 0.30 * _soft(v - 0.86, 0.02) * body * (1 - lungs)  # below the diaphragm: liver, stomach

    for side in (-1, 1):
        lateral = np.clip(np.abs(u) * side * np.sign(u + 1e-9), 0, None)
        on_side = (u * side > 0.04) & (np.abs(u) < 0.75)
        for k in range(10):  # posterior ribs: arcs sloping down laterally
            v0 = 0.20 + k * rng.uniform(0.062, 0.068)
            centre = v0 - 0.06 + 0.6 * (lateral - 0.25) ** 2
            rib = _soft(np.abs(v - centre) - 0.012, 1.5 * px) * on_side
            image += 0.07 * rib
        clavicle = 0.17 + 0.05 * np.sin(np.clip(lateral, 0, 0.7) * 4.5) - 0.04 * lateral
        image += 0.2 * _soft(np.abs(v - clavicle) - 0.018, 2 * px) * (u * side > 0.08) * (np.abs(u) < 0.72)

    if pneumonia:
        blobs = _smooth_noise(rng, image.shape, height / 25)
        patches = _soft(rng.uniform(0.8, 1.4) - blobs, 0.25) * lungs
        image += rng.uniform(0.15, 0.3) * patches

    image = ndimage.gaussian_filter(image, 0.6) + rng.normal(0, 0.012, image.shape)
    gamma = rng.uniform(0.85, 1.2)
    return np.clip(image, 0, 1) ** gamma
