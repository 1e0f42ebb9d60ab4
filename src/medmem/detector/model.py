"""The encoder, the copy augmentations, NT-Xent training, and weights that load without running code."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from medmem.errors import InputError
from medmem.io import atomic_output

log = logging.getLogger(__name__)

FORMAT = "medmem-copy-detector-1"


class Encoder(nn.Module):
    """Convolutional encoder: uint8-scaled images (B, C, H, W) float32 in [0, 1] -> (B, dim) embeddings.

    A 3×3 stem at full resolution, then stride-2 stages (channels doubling up to 4·width) until the
    feature map is at most 8×8, global average pooling and a linear layer. `head` is SimCLR's projection
    MLP (dim -> dim -> dim/2), used only for the loss; the embeddings searched are the encoder's.
    """

    def __init__(self, channels: int, size: int, width: int = 32, dim: int = 128):
        super().__init__()
        self.config = {"channels": int(channels), "size": int(size), "width": int(width), "dim": int(dim)}
        layers = [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c, s = width, size
        while s > 8:
            out = min(2 * c, 4 * width)
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c, s = out, math.ceil(s / 2)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Linear(c, dim)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float32 in [0, 1] → (B, dim) float32 embeddings (the head not applied)."""
        return self.embed(self.features(x))


def copy_augmentations(size: int) -> v2.Compose:
    """What a copy might carry, per image (C, H, W) float32 in [0, 1] (torchvision transforms v2):
    mirror, rotation ±10°, translation ±10 %, scaling 0.85-1.15 (zero fill), crop of 70-100 % of the
    area resized back, elastic deformation, gain 0.8-1.25 and offset ±0.1 (intensity and contrast),
    Gaussian noise σ 0.02, and an erased patch (a partial copy keeps only part of the image)."""
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.85, 1.15), fill=0),
        v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18), antialias=True),
        v2.RandomApply([v2.ElasticTransform(alpha=float(size) / 2, sigma=float(size) / 8)], p=0.5),
        v2.Lambda(_gain_offset),
        v2.GaussianNoise(mean=0.0, sigma=0.02, clip=True),
        v2.RandomErasing(p=0.25, scale=(0.05, 0.25), value=0),
    ])


def _gain_offset(x: torch.Tensor) -> torch.Tensor:
    """Random contrast (gain 0.8-1.25, log-uniform) and brightness (offset ±0.1): of every pixel, or
    (half the time) of the non-zero ones only, keeping the background black."""
    gain = torch.exp(torch.empty(()).uniform_(math.log(0.8), math.log(1.25)))
    offset = torch.empty(()).uniform_(-0.1, 0.1)
    changed = (x * gain + offset).clamp(0, 1)
    return torch.where(x > 0, changed, x) if torch.rand(()) < 0.5 else changed


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss for (B, d) projections of two views: cross-entropy of each view against its
    partner among the 2B − 1 other projections, cosine similarity / temperature (Chen et al. 2020, eq. 1)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(-math.inf)
    b = len(z1)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, target)


def train_detector(images: np.ndarray, *, steps: int = 600, batch: int = 64, lr: float = 1e-3,
                   temperature: float = 0.2, width: int = 32, dim: int = 128, seed: int = 0,
                   device: str = "cpu", progress: bool = True) -> tuple[Encoder, list[float]]:
    """Train the encoder on uint8 (N, C, H, W) training images (H = W); returns (encoder in eval mode,
    the loss per step). Deterministic for a seed on the CPU.

    steps: optimiser steps (Adam, `lr`); batch: images per step (two augmented views each); temperature:
    NT-Xent's τ (SimCLR's 0.1-0.5 range, Chen et al. 2020); width, dim: see `Encoder`.
    Raises InputError for images that are not N×C×H×W with H = W, or fewer than 2 images.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise InputError(f"training images must be N×C×H×W with H = W, got {images.shape}")
    if len(images) < 2:
        raise InputError(f"the detector needs at least 2 training images, got {len(images)}")
    torch.manual_seed(seed)
    dev = torch.device(device)
    size = images.shape[-1]
    model = Encoder(images.shape[1], size, width, dim).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    augment = copy_augmentations(size)
    generator = torch.Generator().manual_seed(seed)
    b = min(batch, len(images))
    losses = []
    model.train()
    threads = torch.get_num_threads()
    if dev.type == "cpu":  # per-image transforms and a small network: intra-op threads add latency (40×)
        torch.set_num_threads(1)
    try:
        _train_steps(model, optimiser, augment, images, generator, steps, b, temperature, dev, losses, progress)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    log.info("copy detector: NT-Xent %.3f after %d steps (first %.3f)", losses[-1], steps, losses[0])
    return model, losses


def _train_steps(model, optimiser, augment, images, generator, steps, b, temperature, dev, losses, progress):
    for _ in tqdm(range(steps), desc="copy detector", unit="step", disable=not progress):
        pick = torch.randperm(len(images), generator=generator)[:b].numpy()
        x = torch.from_numpy(np.asarray(images[np.sort(pick)])).to(torch.float32) / 255
        views = [torch.stack([augment(img) for img in x]).to(dev) for _ in range(2)]
        loss = nt_xent(model.head(model(views[0])), model.head(model(views[1])), temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())


@torch.no_grad()
def embed(model: Encoder, images: np.ndarray, batch: int = 512, device: str = "cpu") -> np.ndarray:
    """(N, dim) float32 embeddings of uint8 (N, C, H, W) images (eval mode, so deterministic), `batch`
    images at a time on `device`, pixels scaled to [0, 1]."""
    model = model.to(device).eval()
    out = []
    for s in range(0, len(images), batch):
        x = torch.from_numpy(np.array(images[s:s + batch])).to(device, torch.float32) / 255
        out.append(model(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config["dim"]), np.float32)


def save_detector(model: Encoder, path, extra: dict | None = None) -> None:
    """State dict and a JSON-able config (no pickled module): loads with torch.load(weights_only=True)."""
    payload = {"format": FORMAT, "config": dict(model.config), "extra": dict(extra or {}),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_detector(path) -> tuple[Encoder, dict]:
    """The encoder saved by `save_detector` (InputError naming the file if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: detector weights do not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable detector weights file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a medmem copy detector ({FORMAT})")
    try:
        model = Encoder(**payload["config"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, KeyError, RuntimeError) as exc:
        raise InputError(f"{path}: detector weights do not match their config ({type(exc).__name__})") from None
    return model.eval(), payload.get("extra", {})
