"""StyleGAN2 at the study's configuration (256², 5 channels, batch 32): training and sampling speed.

Training images/s over a few full minibatches (all four phases, lazy regularization included in
proportion), sampling images/s of the EMA generator; on a GPU, sec/kimg beside NVlabs' published
StyleGAN2 figure for 256² on one GPU of that class.

    python benchmarks/bench_stylegan2.py [--steps 4] [--device cuda]
    python benchmarks/bench_stylegan2.py --resolution 32 --batch 16 --channel-base 1024 --channel-max 64 --steps 16
        (the embedded config's network, for a CPU)
"""

from __future__ import annotations

import argparse
import time

import torch

from medmem.training.distributed import Context
from medmem.training.loop import step_generator
from medmem.training.stylegan2 import StyleGAN2Task

PUBLISHED_S_PER_KIMG = {"A100": 12.5, "V100": 20.8}  # NVlabs, 256², one GPU (V100: channel base 16384)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4,
                        help="timed minibatches, from step 16 on (16: one R1 and four path-length passes)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--channel-base", type=int, default=32768)
    parser.add_argument("--channel-max", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    ctx = Context(0, 1, device)
    cfg = dict(resolution=args.resolution, img_channels=5, channel_base=args.channel_base,
               channel_max=args.channel_max)
    task = StyleGAN2Task(cfg, cfg, ctx, batch=args.batch)
    reals = torch.rand(args.batch, 5, args.resolution, args.resolution, device=device) * 2 - 1
    for step in (0, 1):  # warm-up: every phase once (R1 and path length at step 0), so that first-use
        task.step(reals, step, step_generator(0, step))  # costs (cuDNN autotuning, allocations) go untimed
    sync(device)
    start = time.perf_counter()
    for step in range(16, 16 + args.steps):  # R1 every 16 steps, path length every 4, as in a long run
        task.step(reals, step, step_generator(0, step))
    sync(device)
    train_rate = args.steps * args.batch / (time.perf_counter() - start)
    z = torch.randn(args.batch, 512, device=device)
    with torch.no_grad(), task.autocast:
        task.G_ema(z)
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            task.G_ema(z)
        sync(device)
    sample_rate = args.steps * args.batch / (time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; {args.resolution}², 5 channels, batch {args.batch}, {torch.get_num_threads()} CPU threads")
    print(f"training: {train_rate:8.2f} images/s = {1000 / train_rate:8.1f} s/kimg")
    print(f"sampling: {sample_rate:8.2f} images/s; 100,000 samples in {100000 / sample_rate / 60:.1f} min")
    for gpu, s in PUBLISHED_S_PER_KIMG.items():
        if gpu in name:
            print(f"NVlabs published, one {gpu}: {s} s/kimg; ours / theirs: {s / (1000 / train_rate):.2f}")


if __name__ == "__main__":
    main()
