"""StyleGAN2 sampling as the study ran it: one seed per image, truncation ψ = 1, constant noise,
output clamp(x · 127.5 + 128) as uint8. The latent of seed s is NVlabs' (stylegan3 gen_images.py,
line 125; stylegan2-ada-pytorch generate.py, line 118): `np.random.RandomState(s).randn(1, z_dim)`,
so the study's seeds 2…100,001 give the study's latents."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from medmem import precision as precisions
from medmem.errors import InputError
from medmem.images import to_uint8_rounded
from medmem.models.stylegan2 import Generator
from medmem.sampling.writer import write_samples


def load_generator(network: dict, device) -> Generator:
    """The generator of a network.pt payload (`network["generator"]` config, `network["weights"]`,
    the EMA generator's state dict) on `device`, in eval mode without gradients. Raises InputError
    when the weights do not fit the network that config builds."""
    G = Generator(**network["generator"]).to(device)
    try:
        G.load_state_dict(network["weights"])
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(exc)
        raise InputError(f"the network's weights do not fit its StyleGAN2 generator config: {first}") from None
    return G.eval().requires_grad_(False)


def seed_latents(seeds, z_dim: int) -> torch.Tensor:
    """(len(seeds), z_dim) float32: row i is `np.random.RandomState(seeds[i]).randn(1, z_dim)`, NVlabs'
    latent for that seed (drawn in float64; its mapping network casts z to float32 first)."""
    return torch.from_numpy(np.concatenate([np.random.RandomState(int(s)).randn(1, z_dim) for s in seeds])).float()


@torch.no_grad()
def sample(network: dict, output, n: int, seed: int = 0, batch: int = 64, truncation: float = 1.0,
           noise_mode: str = "const", device="cpu", channel_names=(), precision: str = "float32",
           record: dict | None = None) -> None:
    """Write `n` samples from seeds seed … seed + n − 1 to `output`: a uint8 .npy of shape
    (n, img_channels, resolution, resolution), with OUTPUT.json (seeds, ψ, noise mode, precision,
    plus `record`) and one preview grid PNG per channel beside it
    (`medmem.sampling.writer.write_samples`: resumable, atomic).

    `network`: a network.pt payload of a StyleGAN2 ("generator", "weights"). Image i's latent is
    NVlabs' for seed + i (`seed_latents`); `truncation`: ψ (1: none, the study's); `noise_mode`:
    "const" (the study's, the generator's fixed noise) or "random" (per batch, seeded
    seed + start + 10⁹); `batch`: images per network call; `channel_names`: for the preview files;
    `precision`: "float32" or "bf16" (autocast on CUDA, float32 on the CPU), recorded in the .json.
    Pixels: clamp(x · 127.5 + 128) to uint8 (`medmem.images.to_uint8_rounded`). Raises InputError
    when the weights do not fit, ValueError for an unknown precision.
    """
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
            "output": "clamp(x * 127.5 + 128) as uint8", "kimg": network.get("kimg")}
    info.update(record or {})
    write_samples(output, shape, batches, info, channel_names)
