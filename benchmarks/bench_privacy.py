"""DP-SGD's cost for the diffusion model: seconds per training step with and without it, and the noise
it needs at the embedded default's scale.

The network and batch are the embedded default's diffusion block (config/config.yaml: base 32, one
block per level, multipliers 1 2 2, attention at 8×8, 4 heads, batch 8, 1,000 steps) on random 5-channel
32×32 images, N = 198 (the embedded brats20's training slices). Per step: the median over `--steps` steps
after two warm-up steps, for the plain step and the DP-SGD step (Opacus's per-sample gradients,
clipping and noise; Poisson minibatches of expected size 8). Then, for target ε of 1, 4 and 8 over the
embedded run's 5.6 kimg (700 steps, q = 8/198, δ = 1/(100 N)): the noise multiplier σ and, as a check,
the accountant's ε after a short real run of `--run-steps` steps planned as the whole run.

    python benchmarks/bench_privacy.py [--device cuda] [--steps 20] [--run-steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from medmem.models.unet import unet_config
from medmem.sampling.samplers import schedule_config
from medmem.training.diffusion import DiffusionTask
from medmem.training.distributed import Context
from medmem.training.loop import LoopSettings, step_generator, train
from medmem.training.privacy import PrivateTraining, dp_options, training_steps
from medmem.weights import load_plain

N, BATCH, KIMG = 198, 8, 5.6


def _task(ctx, dp=None, steps=None):
    torch.manual_seed(0)
    unet = unet_config(5, 32, base=32, layers=1, mults=(1, 2, 2), attention_resolutions=(8,), heads=4)
    return DiffusionTask(unet, schedule_config(1000), ctx, batch=BATCH, lr=5e-4, ema=0.995, ema_warmup=True,
                         dp=dp, n_train=N, steps=steps)


def _seconds_per_step(task, images, ctx, steps):
    times = []
    for step in range(steps + 2):
        index = task.batch_indices(0, step)
        index = np.arange(step * BATCH, (step + 1) * BATCH) % N if index is None else index
        reals = torch.from_numpy(images[index]).to(ctx.device).float() / 127.5 - 1
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        task.step(reals, step, step_generator(0, step))
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--run-steps", type=int, default=20)
    a = parser.parse_args()
    ctx = Context(device=torch.device(a.device))
    images = np.random.default_rng(0).integers(0, 256, (N, 5, 32, 32), dtype=np.uint8)
    steps = training_steps(KIMG, BATCH)
    dp = dp_options({"dp_epsilon": 8.0}, N, BATCH)
    plain = _seconds_per_step(_task(ctx), images, ctx, a.steps)
    private = _seconds_per_step(_task(ctx, dp, steps), images, ctx, a.steps)
    print(f"device {a.device}, torch threads {torch.get_num_threads()}, N {N}, batch {BATCH}")
    print(f"seconds per step: plain {plain:.4f}, DP-SGD {private:.4f}, ratio {private / plain:.2f}")
    print(f"embedded run: {steps} steps, q = {BATCH}/{N} = {BATCH / N:.4f}, delta = {dp['delta']:.3g}")
    for epsilon in (1.0, 4.0, 8.0):
        for accountant in ("prv", "rdp"):
            options = dp_options({"dp_epsilon": epsilon, "dp_accountant": accountant}, N, BATCH)
            net = _task(ctx).net
            sigma = PrivateTraining(net, torch.optim.SGD(net.parameters(), lr=0.1), N, BATCH, steps,
                                    options).noise_multiplier
            print(f"  target epsilon {epsilon:g} ({accountant}): noise multiplier {sigma:.3f}")
    kimg = a.run_steps * BATCH / 1000
    with tempfile.TemporaryDirectory() as out:
        task = _task(ctx, dp, training_steps(kimg, BATCH))
        network = train(task, images, out, LoopSettings(kimg=kimg, batch=BATCH, log_kimg=kimg, checkpoint_kimg=1e6,
                                                        snapshot_kimg=1e6), ctx, progress=False)
        record = load_plain(network, "network")["privacy"]
    print(f"a {a.run_steps}-step run planned for target epsilon 8: spent epsilon {record['epsilon']:.3f} at "
          f"delta {record['delta']:.3g} ({record['accountant']}, noise multiplier {record['noise_multiplier']:.3f}, "
          f"{record['steps_taken']} steps)")


if __name__ == "__main__":
    main()
