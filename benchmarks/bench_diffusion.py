"""The study's diffusion model (256², 5 channels, 41.1 M parameters): training and sampling speed.

Training: images/s of our training step (AdamW, EMA, the study's noise schedule) against a bare
diffusers loop (UNet forward, MSE, AdamW step) in the same run; the ratio is our overhead.
Sampling: seconds per denoising step of a batch, timed over a few steps, for our sampler and for
diffusers' own DDPMPipeline on the same network; extrapolated to the study's 4,000 ancestral steps
and to DPM-Solver++ at 25 steps, and to the wall-clock of 100,000 samples on one device.
On CUDA: bf16 autocast and channels_last, and with --compile, torch.compile of the UNet.

    python benchmarks/bench_diffusion.py [--device cuda] [--batch 32] [--compile]
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline

from medmem.models import count_parameters
from medmem.models.unet import build_unet, unet_config
from medmem.sampling.diffusion import denoise
from medmem.sampling.samplers import sampler, schedule_config, training_scheduler
from medmem.training.diffusion import DiffusionTask
from medmem.training.distributed import Context
from medmem.training.loop import step_generator


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats, device) -> float:
    fn()  # warm-up (and compilation)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="training and sampling batch (default: 32 on CUDA, 4 on CPU)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed repeats")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (32 if device.type == "cuda" else 4)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg, schedule = unet_config(5, args.size), schedule_config(4000)
    reals = torch.rand(batch, 5, args.size, args.size, device=device) * 2 - 1
    if cuda:
        reals = reals.contiguous(memory_format=torch.channels_last)

    # ours: the training step as `medmem train diffusion` runs it
    task = DiffusionTask(cfg, schedule, Context(0, 1, device), batch=batch)
    if args.compile:
        task.net = torch.compile(task.net)
    counter = iter(range(10**6))
    ours = timed(lambda: task.step(reals, (s := next(counter)), step_generator(0, s)), args.steps, device)

    # baseline: a bare diffusers training loop on the same network
    net = build_unet(cfg).to(device)
    if cuda:
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0)
    abar = training_scheduler(schedule).alphas_cumprod.to(device).float()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def bare_step():
        t = torch.randint(0, 4000, (batch,), device=device)
        noise = torch.randn_like(reals)
        a = abar[t][:, None, None, None]
        with autocast:
            loss = F.mse_loss(net(a.sqrt() * reals + (1 - a).sqrt() * noise, t).sample.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    bare = timed(bare_step, args.steps, device)

    # sampling: one denoising step of a batch, ours and diffusers' pipeline
    ema = task.net_ema
    generators = [torch.Generator().manual_seed(i) for i in range(batch)]
    shape = (batch, 5, args.size, args.size)
    per_step = {}
    for name, steps in (("ancestral", 4000), ("dpm-solver++", 25)):
        scheduler = sampler(schedule, name, steps)
        scheduler.timesteps = scheduler.timesteps[: args.steps]
        per_step[name] = timed(lambda: denoise(ema, scheduler, shape, generators, device, autocast, progress=False),
                               1, device) / args.steps
    pipeline = DDPMPipeline(unet=ema, scheduler=sampler(schedule, "ancestral"))
    pipeline.set_progress_bar_config(disable=True)

    def pipeline_steps():
        with autocast:
            pipeline(batch_size=batch, num_inference_steps=args.steps, output_type="np")

    pipe_step = timed(pipeline_steps, 1, device) / args.steps

    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; {args.size}², 5 channels, {count_parameters(net) / 1e6:.2f} M parameters, batch {batch}"
          f"{', bf16 autocast, channels_last' if cuda else ', float32'}{', torch.compile' if args.compile else ''}")
    print(f"training, ours:        {batch / ours:8.2f} images/s = {ours * 1000 / batch:8.1f} s/kimg")
    print(f"training, bare loop:   {batch / bare:8.2f} images/s; ours / bare = {bare / ours:.2f}")
    print(f"sampling step, ours:   {per_step['ancestral'] * 1000:8.1f} ms per batch step; "
          f"diffusers DDPMPipeline: {pipe_step * 1000:.1f} ms; ours / pipeline speed = {pipe_step / per_step['ancestral']:.2f}")
    for label, key, steps in (("study, 4,000 ancestral steps", "ancestral", 4000),
                              ("DPM-Solver++, 25 steps", "dpm-solver++", 25)):
        rate = batch / (per_step[key] * steps)
        print(f"{label:30s}: {rate:10.4f} images/s; 100,000 samples in {100000 / rate / 3600:10.1f} h on one device")


if __name__ == "__main__":
    main()
