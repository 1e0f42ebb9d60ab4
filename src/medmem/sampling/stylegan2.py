"""StyleGAN2 sampling as the study ran it: one seed per image, truncation ψ = 1, constant noise,
output clamp(x · 127.5 + 128) as uint8."""

from __future__ import annotations

import torch
from tqdm import tqdm

from medmem.models.stylegan2 import Generator, to_uint8
from medmem.sampling.writer import write_samples


def load_generator(network: dict, device) -> Generator:
    G = Generator(**network["generator"]).to(device)
    G.load_state_dict(network["weights"])
    return G.eval().requires_grad_(False)


def seed_latents(seeds, z_dim: int) -> torch.Tensor:
    """One latent per seed, independent of the batch it is drawn in."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample(network: dict, output, n: int, seed: int = 0, batch: int = 64, truncation: float = 1.0,
           noise_mode: str = "const", device="cpu", channel_names=(), record: dict | None = None) -> None:
    """`n` images from seeds seed … seed + n − 1 into `output`; `record` is added to OUTPUT.json."""
    G = load_generator(network, device)
    cfg = network["generator"]
    shape = (n, cfg["img_channels"], cfg["resolution"], cfg["resolution"])
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda"
                else torch.autocast("cpu", enabled=False))

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
            yield start, to_uint8(images)

    info = {"model": "stylegan2", "n": n, "seeds": [seed, seed + n - 1], "truncation_psi": truncation,
            "noise_mode": noise_mode, "output": "clamp(x * 127.5 + 128) as uint8"}
    info.update(record or {})
    write_samples(output, shape, batches, info, channel_names)
