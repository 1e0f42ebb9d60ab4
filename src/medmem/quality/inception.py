"""torch-fidelity's Inception-v3 feature extractor, per image channel, with offline weights.

Each channel of an N×C×H×W uint8 array is replicated to RGB (the study's way of scoring MR
modalities); the extractor resizes to 299² itself. Weights: a local file (`weights`), else
torch-fidelity's download (cached by torch.hub); where neither works the caller decides
whether that is an error (`required`) or a recorded gap (`auto`).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medmem.errors import InputError
from medmem.io import file_digest

log = logging.getLogger(__name__)

UNAVAILABLE = "not computed: Inception weights unavailable"
FEATURES = ("2048", "logits_unbiased")  # pool features for FID and KID, logits for IS


class WeightsUnavailable(Exception):
    """No Inception weights: no local file was configured and torch-fidelity's download failed."""




def load_extractor(weights: str | None, device="cpu"):
    """torch-fidelity's "inception-v3-compat" extractor (features "2048" and "logits_unbiased") on
    `device` and a description of its weights (file name and SHA-256, or the download).

    weights: a local file (pt_inception-2015-12-05-6726825d.pth), or None for torch-fidelity's
    download. Raises InputError naming a local file that is missing or not such weights;
    WeightsUnavailable when no file is given and the download fails.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

    if weights:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"{path}: Inception weights file not found (config key quality.inception_weights)")
        try:
            extractor = FeatureExtractorInceptionV3("inception-v3-compat", list(FEATURES),
                                                    feature_extractor_weights_path=str(path))
        except Exception as exc:
            raise InputError(f"{path}: not torch-fidelity Inception weights ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]})") from None
        source = f"{path.name} (sha256 {file_digest(path)})"
    else:
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # torch.hub's "Downloading: ..." line
                extractor = FeatureExtractorInceptionV3("inception-v3-compat", list(FEATURES))
        except Exception as exc:  # offline: URLError, socket errors, a broken cache
            raise WeightsUnavailable(f"{UNAVAILABLE} (no local file configured, and the download of "
                                     f"{URL_INCEPTION_V3} failed: {type(exc).__name__})") from None
        source = "torch-fidelity's download (pt_inception-2015-12-05)"
    return extractor.to(device), source


@torch.no_grad()
def channel_features(extractor, images: np.ndarray, channel: int, batch: int = 64, device="cpu",
                     desc: str = "inception") -> dict[str, np.ndarray]:
    """Pool features (N, 2048) and unbiased logits (N, 1008), float32, of one channel of uint8
    (N, C, H, W) images replicated to RGB (the extractor resizes to 299² itself), `batch` at a time."""
    out = {name: [] for name in FEATURES}
    for start in tqdm(range(0, len(images), batch), desc=desc, unit="batch", leave=False):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch, channel:channel + 1]))
        feats = extractor(x.expand(-1, 3, -1, -1).to(device))
        for name, f in zip(FEATURES, feats):
            out[name].append(f.float().cpu().numpy())
    return {name: np.concatenate(v) for name, v in out.items()}
