"""Image sets for the audit tests, written by code: slices with structure, in the study's layout."""

from pathlib import Path

import numpy as np
from PIL import Image

STUDY_FOLDERS = {"t1": "T1", "flair": "FLAIR", "t1ce": "T1ce", "seg": "SEG"}


def anatomy(n_subjects=3, n_slices=4, size=24, seed=0) -> tuple[np.ndarray, list]:
    """(N, 2, size, size) uint8 'slices' with structure (smooth blobs that drift with the slice), every
    image spanning 0..255 exactly, and (subject, slice) per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images, keys = [], []
    for s in range(n_subjects):
        centres = rng.uniform(0.2, 0.8, (3, 2))
        for z in range(n_slices):
            chans = []
            for c in range(2):
                img = sum(np.exp(-((yy - a - 0.03 * z) ** 2 + (xx - b) ** 2) / (0.02 + 0.01 * c)) for a, b in centres)
                img = img + 0.05 * rng.standard_normal(img.shape)
                img = (img - img.min()) / (img.max() - img.min()) * 255
                chans.append(np.rint(img).astype(np.uint8))
            images.append(np.stack(chans))
            keys.append((str(s + 1), 40 + z))
    return np.array(images), keys


def write_study(root: Path, images: np.ndarray, names: list[str], channels=("t1", "flair")) -> Path:
    """The study's layout: ROOT/T1/<name>_t1.png ... (or seed files without suffix)."""
    for c, ch in enumerate(channels):
        folder = root / STUDY_FOLDERS[ch]
        folder.mkdir(parents=True, exist_ok=True)
        for img, name in zip(images, names):
            file = f"{name}_{ch}.png" if name.startswith("Subject") else f"{name}.png"
            Image.fromarray(img[c]).save(folder / file)
    return root


def subject_names(keys):
    return [f"Subject_{s}_slice_{z}" for s, z in keys]
