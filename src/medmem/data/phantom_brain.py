"""BraTS-like phantom subjects on real anatomy (the MNI152 2009a templates shipped in nilearn's wheel).

Each subject: the template warped by a random affine and a smooth random displacement, four
modalities from tissue probabilities with their typical contrasts, a bias field and Rician noise,
and a tumour (necrosis 1, oedema 2, enhancing rim 4) of random place, size and irregular shape.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medmem.errors import InputError

BRATS_FOV_MM = np.array([240.0, 240.0, 155.0])
MNI_BRAIN_CENTRE_MM = np.array([0.0, -18.0, 4.0])
# Relative intensity of each tissue per modality (BraTS-like contrasts).
CONTRAST = {
    #        csf   gm    wm    oedema enhancing necrosis
    "t1":    (0.30, 0.62, 0.85, 0.50, 0.62, 0.22),
    "t1ce":  (0.30, 0.62, 0.80, 0.50, 1.35, 0.20),
    "t2":    (1.00, 0.55, 0.40, 0.85, 0.65, 0.95),
    "flair": (0.12, 0.60, 0.48, 1.00, 0.75, 0.40),
}


def _template_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("nilearn is not installed: its wheel carries the MNI152 templates the brain phantoms use")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def mni_templates() -> dict[str, np.ndarray]:
    """T1, grey- and white-matter templates as float32 in [0, 1] (197×233×189, 1 mm, RAS)."""
    out = {}
    for name in ("t1", "gm", "wm"):
        path = _template_dir() / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
        out[name] = np.asarray(nib.load(path).dataobj, dtype=np.float32) / 255.0
    out["origin"] = np.array([-98.0, -134.0, -72.0])  # world mm of voxel (0, 0, 0)
    return out


def _smooth_field(rng, shape, grid=(5, 5, 4), amplitude=1.0) -> np.ndarray:
    coarse = rng.standard_normal(grid).astype(np.float32) * amplitude
    zoom = [s / g for s, g in zip(shape, grid)]
    return ndimage.zoom(coarse, zoom, order=3, mode="nearest")[: shape[0], : shape[1], : shape[2]]


def _rotation(angles) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def warped_anatomy(rng, shape) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Resample the templates onto a BraTS-like grid (240×240×155 mm field of view) with a random warp.

    Returns the warped templates ("t1", "gm", "wm": float32 in [0, 1], `shape`) and the world
    coordinates (3, *shape) float32 (mm, template space) of every voxel.
    """
    tpl = mni_templates()
    shape = tuple(int(s) for s in shape)
    spacing = BRATS_FOV_MM / np.array(shape)
    grid = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * d - f / 2 for n, d, f in zip(shape, spacing, BRATS_FOV_MM)],
                                indexing="ij"), axis=0).astype(np.float32)  # (3, X, Y, Z), mm from centre
    linear = _rotation(rng.normal(0, np.deg2rad(4), 3)) * rng.uniform(0.92, 1.06, 3)
    shift = MNI_BRAIN_CENTRE_MM + rng.normal(0, 3, 3)
    world = np.tensordot(linear.astype(np.float32), grid, axes=1) + shift[:, None, None, None].astype(np.float32)
    for axis in range(3):  # smooth non-linear displacement, a few mm
        world[axis] += _smooth_field(rng, shape, amplitude=3.0)
    voxels = world - tpl["origin"][:, None, None, None].astype(np.float32)
    warped = {name: ndimage.map_coordinates(tpl[name], voxels, order=1, mode="constant", cval=0.0)
              for name in ("t1", "gm", "wm")}
    return warped, world


def tumour_labels(rng, world: np.ndarray, brain: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Necrosis (1) inside an enhancing rim (4) inside oedema (2), irregular, within the brain.

    world: (3, X, Y, Z) mm coordinates; brain: (X, Y, Z) bool; wm: (X, Y, Z) white-matter probability.
    Returns (X, Y, Z) uint8 labels in {0, 1, 2, 4}, centred in white matter (radii 14-34 mm oedema);
    all 0 when there is no white matter above 0.6.
    """
    candidates = np.argwhere((wm > 0.6) & brain)
    if len(candidates) == 0:
        return np.zeros(brain.shape, np.uint8)
    centre = world[(slice(None), *candidates[rng.integers(len(candidates))])]
    dist = np.sqrt(((world - centre[:, None, None, None]) ** 2).sum(axis=0))
    irregular = 1.0 + 0.22 * _smooth_field(rng, brain.shape, grid=(6, 6, 5))
    r_oedema = rng.uniform(14, 34)
    r_core = r_oedema * rng.uniform(0.35, 0.65)
    r_necrosis = r_core * rng.uniform(0.3, 0.7)
    scaled = dist / irregular
    labels = np.zeros(brain.shape, np.uint8)
    labels[scaled < r_oedema] = 2
    labels[scaled < r_core] = 4
    labels[scaled < r_necrosis] = 1
    labels[~brain] = 0
    return labels


def brain_subject(rng, shape=(240, 240, 155)) -> dict[str, np.ndarray]:
    """One subject: int16 t1, t1ce, t2, flair (0 outside the brain, maximum 700-3000) and uint8 seg
    (labels 0, 1, 2, 4) volumes of the given (X, Y, Z) shape, drawn from `rng` (numpy Generator).

    Raises InputError when nilearn (the MNI152 templates) is not installed.
    """
    warped, world = warped_anatomy(rng, shape)
    brain = warped["t1"] > 0.12
    gm, wm = warped["gm"], warped["wm"]
    csf = np.clip(1.0 - gm - wm, 0, 1) * brain
    labels = tumour_labels(rng, world, brain, wm)
    tumour = {code: ndimage.gaussian_filter((labels == code).astype(np.float32), 0.7) for code in (2, 4, 1)}
    tumour_weight = np.clip(sum(tumour.values()), 0, 1)
    bias = 1.0 + 0.08 * _smooth_field(rng, shape, grid=(3, 3, 3))
    volumes = {}
    for mod, contrast in CONTRAST.items():
        c = np.array(contrast) * rng.uniform(0.92, 1.08, 6)
        tissue = csf * c[0] + gm * c[1] + wm * c[2]
        if mod == "t1":  # keep the template's own T1 texture (real anatomy)
            tissue = 0.5 * tissue + 0.5 * warped["t1"] * c[2]
        lesion = (tumour[2] * c[3] + tumour[4] * c[4] + tumour[1] * c[5]) / np.maximum(tumour_weight, 1e-6)
        image = ((1 - tumour_weight) * tissue + tumour_weight * lesion) * bias
        sigma = 0.02
        image = np.sqrt((image + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
        image *= brain
        volumes[mod] = np.round(image / image.max() * rng.uniform(700, 3000)).astype(np.int16)
    volumes["seg"] = labels
    return volumes


def write_brain_subject(volumes: dict[str, np.ndarray], folder: Path, name: str, gz: bool) -> None:
    """Write each volume of `brain_subject` as `folder/<name>_<mod>.nii` (`.nii.gz` when `gz`), NIfTI-1
    with a BraTS-like affine (voxel size 240×240×155 mm / shape, mm units); creates `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = volumes["t1"].shape
    spacing = BRATS_FOV_MM / np.array(shape)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [spacing[0] * shape[0] / 2, spacing[1] * shape[1] / 2 - 239, -spacing[2] * shape[2] / 2 + 83]
    ext = ".nii.gz" if gz else ".nii"
    for mod, data in volumes.items():
        image = nib.Nifti1Image(data, affine)
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, folder / f"{name}_{mod}{ext}")


def subject_name(release: int, number: int) -> str:
    """The release's folder name for subject `number` (1-based): BraTS20_Training_001 for 2020,
    BraTS2021_00001 otherwise."""
    return f"BraTS20_Training_{number:03d}" if release == 2020 else f"BraTS2021_{number:05d}"
