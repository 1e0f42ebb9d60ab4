"""StyleGAN2 sampling as the study ran it: one seed per image, truncation ψ = 1, constant noise,
output clamp(x · 127.5 + 128) as uint8. The latent of seed s is NVlabs' (stylegan3 gen_images.py,
line 125; stylegan2-ada-pytorch generate.py, line 118): `np.random.RandomState(s).randn(1, z_dim)`,
so the study's seeds 2…100,001 give the study's latents."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from medmem import precision as precisions
from medmem.images import to_uint8_rounded
from medmem.models.stylegan2 import Generator
from medmem.sampling.writer import write_samples


def load_generator(network: dict, device) -> Generator:
    G = Generator(**network["generator"]).to(device)
    G.load_state_dict(network["weights"])
    return G.eval().requires_grad_(False)


def seed_latents(seeds, z_dim: int) -> torch.Tensor:
    """(len(seeds), z_dim) float32: row i is `np.random.RandomState(seeds[i]).randn(1, z_dim)`, NVlabs'
    latent for that seed (drawn in float64; its mapping network casts z to float32 first)."""
    return torch.from_numpy(np.concatenate([np.random.RandomState(int(s)).randn(1, z_dim) for s in seeds])).float()


@torch.no_grad()
def sample(network: dict, output, n: int, seed: int = 0, batch: int = 64, truncation: float = 1.0,
           noise_mode: str = "const", device="cpu", channel_names=(), precision: str = "float32",
           record: dict | None = None) -> None:
    """`n` samples (uint8, n × C × H × W) from seeds seed … seed + n − 1 into `output` (.npy) with a .json
    record beside it (plus `record`); `precision`: float32 or bf16 autocast (CUDA only; float32 on the CPU),
    recorded in the .json."""
    G = load_generator(network, device)
    cfg = network["generator"]
    shape = (n, cfg["img_channels"], cfg["resolution"], cfg["resolution"])
    precision, autocast = precisions.resolve(precision, device)

    def batches(begin=0):
        for start in tqdm(range(begin, n, batch), unit="batch", desc="sample stylegan2"):
            seeds = range(seed + start, seed + min(start + batch, n))
            z = seed_latents(seeds, G.z_dim).to(device)
            noise = None
            if noise_mode == "random":
                gen = torch.Generator().manual_seed(seed + start + 10**9)
                noise = [torch.randn(len(z), 1, *s, generator=gen).to(device) for s in G.synthesis.noise_shapes()]
            with autocast:
                images = G(z, truncation_psi=truncation, noise=noise)
            yield start, to_uint8_rounded(images)

    info = {"model": "stylegan2", "n": n, "seeds": [seed, seed + n - 1], "truncation_psi": truncation,
            "noise_mode": noise_mode, "precision": precision, "latents": "np.random.RandomState(seed).randn(1, z_dim)",
            "output": "clamp(x * 127.5 + 128) as uint8"}
    info.update(record or {})
    write_samples(output, shape, batches, info, channel_names)
