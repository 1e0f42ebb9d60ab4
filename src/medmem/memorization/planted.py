"""Planted copies: training images copied exactly and with small perturbations, to measure whether
the highest-correlation search finds a copy (the study never checked this)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage


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


def _warp(images: np.ndarray, coords_of) -> np.ndarray:
    """Resample every channel of every image at coordinates (2, H, W) from `coords_of(i)`, bilinear,
    0 outside the image."""
    out = np.empty(images.shape, np.float64)
    for i in range(len(images)):
        coords = coords_of(i)
        for c in range(images.shape[1]):
            out[i, c] = ndimage.map_coordinates(images[i, c].astype(np.float64), coords, order=1, cval=0.0)
    return _clip(out)


def _rotate(x: np.ndarray, rng, degrees: float = 5.0) -> np.ndarray:
    """Rotation by ±5° (random sign per image) about the image centre."""
    H, W = x.shape[-2:]
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    angles = np.deg2rad(degrees) * rng.choice([-1.0, 1.0], size=len(x))

    def coords(i):
        c, s = np.cos(angles[i]), np.sin(angles[i])
        return np.stack([cy + c * (yy - cy) - s * (xx - cx), cx + s * (yy - cy) + c * (xx - cx)])
    return _warp(x, coords)


def _crop_resize(x: np.ndarray, rng, keep: float = 0.9) -> np.ndarray:
    """A random crop of 90 % of each side, resized back to H×W (bilinear)."""
    H, W = x.shape[-2:]
    h, w = keep * (H - 1), keep * (W - 1)
    top, left = rng.uniform(0, H - 1 - h, len(x)), rng.uniform(0, W - 1 - w, len(x))
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    return _warp(x, lambda i: np.stack([top[i] + yy * h / (H - 1), left[i] + xx * w / (W - 1)]))


def _elastic(x: np.ndarray, rng) -> np.ndarray:
    """Elastic deformation: a smooth random displacement field (Gaussian-filtered noise, σ = H/8),
    scaled so the largest displacement is 1.5 pixels per 32 pixels of image side."""
    H, W = x.shape[-2:]
    sigma, amplitude = max(H, W) / 8, 1.5 * max(H, W) / 32
    yy, xx = np.mgrid[:H, :W].astype(np.float64)

    def coords(i):
        field = np.stack([ndimage.gaussian_filter(rng.uniform(-1, 1, (H, W)), sigma) for _ in range(2)])
        field *= amplitude / max(np.abs(field).max(), 1e-12)
        return np.stack([yy + field[0], xx + field[1]])
    return _warp(x, coords)


PERTURBATIONS_ROBUST = {  # what a copy may also carry (issue 16): not part of the study's measure
    "rotate_5deg": _rotate,
    "crop_resize_90": _crop_resize,
    "elastic": _elastic,
}
PARTIAL = "partial"  # the tumour region of a training slice pasted into another (held-out) slice
ALL_PERTURBATIONS = (*PERTURBATIONS, *PERTURBATIONS_ROBUST, PARTIAL)


def partial_copies(train: np.ndarray, recipients: np.ndarray, k: int, seg_channel: int, rng
                   ) -> tuple[np.ndarray, np.ndarray]:
    """K training slices with a tumour: their tumour region (seg > 0, all channels) pasted into randomly
    chosen recipient slices. Returns (images (k', C, H, W) uint8, donor training indices); k' <= k is
    the number of training slices with any tumour."""
    tumour = np.flatnonzero(np.asarray(train[:, seg_channel]).reshape(len(train), -1).any(1))
    donors = np.sort(rng.choice(tumour, size=min(k, len(tumour)), replace=False))
    chosen = rng.choice(len(recipients), size=len(donors), replace=len(recipients) < len(donors))
    out = np.asarray(recipients[chosen]).copy()
    source = np.asarray(train[donors])
    mask = np.broadcast_to((source[:, seg_channel] > 0)[:, None], out.shape)
    out[mask] = source[mask]
    return out, donors


def plant_copies(train: np.ndarray, per_perturbation: int, seed: int,
                 perturbations=tuple(PERTURBATIONS), seg_channel: int | None = None,
                 recipients: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """The same K randomly chosen training images under every perturbation: (images, manifest).

    `perturbations` may name those of PERTURBATIONS, PERTURBATIONS_ROBUST and "partial"; "partial"
    needs `seg_channel` (skipped without one, or without any tumour) and pastes into `recipients`
    (default: the training images themselves; the workflow passes held-out images).

    train: (N, C, H, W) uint8; per_perturbation: K (at most N); seed: numpy `default_rng(seed)`;
    seg_channel: index of the segmentation channel. Returns images (len(manifest), C, H, W) uint8,
    perturbation blocks in `perturbations` order, and the manifest (query, perturbation,
    source_index: the copied training image). Raises KeyError for an unknown perturbation name.
    """
    rng = np.random.default_rng(seed)
    k = min(per_perturbation, len(train))
    sources = np.sort(rng.choice(len(train), size=k, replace=False))
    originals = np.asarray(train[sources])
    images, rows = [], []
    table = {**PERTURBATIONS, **PERTURBATIONS_ROBUST}
    for name in perturbations:
        if name == PARTIAL:
            if seg_channel is None:
                continue
            pasted, donors = partial_copies(train, train if recipients is None else recipients, k,
                                            seg_channel, rng)
            if len(donors):
                images.append(pasted)
                rows += [{"perturbation": name, "source_index": int(s)} for s in donors]
            continue
        images.append(table[name](originals, rng))
        rows += [{"perturbation": name, "source_index": int(s)} for s in sources]
    manifest = pd.DataFrame(rows)
    manifest.insert(0, "query", np.arange(len(manifest)))
    return np.concatenate(images), manifest


def run_plant(train, output, manifest_path, *, per_perturbation: int = 16, seed: int = 0, robust: bool = True,
              holdout_images=None, info=None) -> pd.DataFrame:
    """`medmem plant`: planted copies of training images to `output` (.npy, uint8 N×C×H×W) and their
    manifest (.csv: which training image each copies, under which perturbation); returns the manifest.

    `train`: train.npy or its folder. `robust` adds the perturbations beyond the study's; the partial
    copies paste a training slice's tumour (channel 'seg' of `info`, dataset.json) into a held-out
    slice from `holdout_images` (default: holdout.npy beside train.npy, when there).
    """
    from medmem.io import atomic_output, dataset_files, open_images, read_dataset_info, write_csv

    files = dataset_files(train, info=info, holdout=holdout_images)
    images_in = open_images(files.train, "training images")
    if robust:
        names = read_dataset_info(files.info).get("channels") or []
        seg = names.index("seg") if "seg" in names else None
        recipients = open_images(files.holdout, "held-out images") if files.holdout.is_file() else None
        images, manifest = plant_copies(images_in, per_perturbation, seed, ALL_PERTURBATIONS, seg_channel=seg,
                                        recipients=recipients)
    else:
        images, manifest = plant_copies(images_in, per_perturbation, seed)
    with atomic_output(output) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    write_csv(manifest, manifest_path)
    return manifest
