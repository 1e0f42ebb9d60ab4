"""Diffusion sampling: the study's 4,000 ancestral steps by default, DDIM or DPM-Solver++ with
fewer steps for smaller budgets. Image i starts from, and draws every step's noise from, its own
generator seeded seed + i, so a sample does not depend on the batch it is made in. Output:
clamp((x + 1) · 127.5) as uint8, the study's (truncating) conversion.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from tqdm import tqdm

from medmem import precision as precisions
from medmem.errors import InputError
from medmem.images import to_uint8_truncated
from medmem.models.unet import build_unet
from medmem.sampling.samplers import sampler
from medmem.sampling.writer import write_samples


@torch.no_grad()
def denoise(net, scheduler, shape, generators, device, autocast=nullcontext(), progress=True) -> torch.Tensor:
    """Run `scheduler`'s timesteps from pure noise and return the images (shape[0], C, H, W),
    float32, clamped to [-1, 1], on `device`.

    `net`: a UNet2DModel predicting ε; `scheduler`: a diffusers scheduler with its timesteps set
    (`medmem.sampling.samplers.sampler`); `shape`: (N, C, H, W); `generators`: N torch.Generators,
    one per image (diffusers draws per-image noise from a list of generators), each on the device
    its noise is drawn on: image i's initial noise and every step's noise come from generator i
    only, so an image does not depend on its batch. `autocast`: a context manager around the
    network call (see `medmem.precision.resolve`); the scheduler step runs in float32.
    """
    x = torch.stack([torch.randn(shape[1:], generator=g, device=g.device) for g in generators]).to(device)
    x = x * scheduler.init_noise_sigma
    if torch.device(device).type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    for t in tqdm(scheduler.timesteps, desc="denoise", leave=False, disable=not progress):
        with autocast:
            eps = net(scheduler.scale_model_input(x, t), t.to(device)).sample
        x = scheduler.step(eps.float(), t, x, generator=generators).prev_sample
    return x.clamp(-1, 1)


def load_unet(network: dict, device, weights: str = "weights"):
    """The UNet of a network.pt payload (`network["unet"]` config, `network[weights]` state dict:
    "weights" the EMA, "raw_weights" the raw ones) on `device`, in eval mode without gradients,
    channels_last on CUDA. Raises InputError when the weights do not fit the network medmem builds
    for that config."""
    net = build_unet(network["unet"]).to(device)
    try:
        net.load_state_dict(network[weights])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise InputError("the network's weights do not fit guided-diffusion's UNet as medmem now builds it "
                         f"(a network.pt from before the middle attention kept its GroupNorm? retrain): {first}") from None
    if torch.device(device).type == "cuda":
        net.to(memory_format=torch.channels_last)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def sample(network: dict, output, n: int, seed: int = 0, batch: int = 32, sampler_name: str = "ancestral",
           steps: int | None = None, device="cpu", channel_names=(), weights: str = "weights",
           precision: str = "float32", record: dict | None = None) -> None:
    """Write `n` samples from seeds seed … seed + n − 1 to `output`: a uint8 .npy of shape
    (n, C, size, size), with OUTPUT.json (sampler, steps, schedule, seeds, precision, plus `record`)
    and one preview grid PNG per channel beside it (`medmem.sampling.writer.write_samples`:
    resumable, atomic).

    `network`: a network.pt payload of a diffusion model ("unet", "schedule", "weights",
    "raw_weights"); image i starts from, and draws every step's noise from, a generator seeded
    seed + i on `device`. `sampler_name`: "ancestral" (the study's), "ddim" or "dpm-solver++";
    `steps`: sampler steps (default: every one of the schedule's T steps); `batch`: images per
    network call; `channel_names`: for the preview files; `weights`: "weights" (EMA) or
    "raw_weights"; `precision`: "float32" (the study's) or "bf16" (autocast on CUDA, float32 on the
    CPU). Pixels: clamp((x + 1) · 127.5) truncated to uint8 (`medmem.images.to_uint8_truncated`).
    Raises InputError when the weights do not fit, ValueError for an unknown sampler or precision.
    """
    net = load_unet(network, device, weights)
    cfg, schedule = network["unet"], network["schedule"]
    shape = (n, cfg["channels"], cfg["size"], cfg["size"])
    precision, autocast = precisions.resolve(precision, device)
    steps = steps or schedule["timesteps"]

    def batches(begin=0):
        for start in tqdm(range(begin, n, batch), unit="batch", desc=f"sample diffusion ({sampler_name}, {steps} steps)"):
            count = min(batch, n - start)
            # on the sampling device: CPU noise for a 256² batch would cost a host-to-device copy per step
            generators = [torch.Generator(device).manual_seed(seed + start + i) for i in range(count)]
            scheduler = sampler(schedule, sampler_name, steps)
            images = denoise(net, scheduler, (count, *shape[1:]), generators, device, autocast, progress=False)
            yield start, to_uint8_truncated(images)

    info = {"model": "diffusion", "n": n, "seeds": [seed, seed + n - 1], "sampler": sampler_name, "steps": steps,
            "schedule": schedule, "weights": "EMA" if weights == "weights" else "raw",
            "x0_clipped": True, "kimg": network.get("kimg"), "precision": precision,
            "output": "clamp((x + 1) * 127.5) as uint8 (truncated)"}
    info.update(record or {})
    write_samples(output, shape, batches, info, channel_names)
