"""The study's diffusion training (guided-diffusion, unconditional) on the shared loop.

t uniform over the T steps, ε-prediction, MSE over all pixels; AdamW (lr 1e-4, no weight decay,
guided-diffusion's default); EMA of the weights (0.9999 in the study, no warm-up; short runs may
warm it up as diffusers' EMAModel does: decay ≤ (1 + step) / (10 + step)). Precision: float32, the
study's (guided-diffusion's `use_fp16=False` default); bf16 autocast on CUDA is opt-in. Noise and timesteps are
drawn for the global batch from the step's generator and sliced per rank, so any number of
processes trains the same model.
"""

from __future__ import annotations

import copy
import torch
import torch.nn.functional as F

from medmem import precision as precisions
from medmem.models.unet import build_unet
from medmem.sampling.diffusion import denoise
from medmem.sampling.samplers import sampler, training_scheduler
from medmem.training.distributed import Context, all_reduce_gradients, local


class DiffusionTask:
    """The study's diffusion training (a `medmem.training.loop.TrainingTask`).

    `unet`: a `medmem.models.unet.unet_config` dict; `schedule`: a
    `medmem.sampling.samplers.schedule_config` dict; `ctx`: the process's rank and device; `batch`:
    the global minibatch. AdamW (guided_diffusion/train_util.py, line 75) with `lr` 1e-4 and
    `weight_decay` 0 (scripts/image_train.py, lines 64-65); EMA decay `ema` 0.9999 (`ema_rate`, line 69),
    with `ema_warmup` min(ema, (1 + step) / (10 + step)) as diffusers' EMAModel. `precision`:
    "float32" (the study's) or "bf16" (autocast on CUDA; float32 on the CPU); ValueError otherwise.
    Snapshots: `snapshot_steps` of `snapshot_sampler` from the EMA network.
    """

    name = "diffusion"

    def __init__(self, unet: dict, schedule: dict, ctx: Context, batch: int, lr: float = 1e-4,
                 weight_decay: float = 0.0, ema: float = 0.9999, ema_warmup: bool = False, precision: str = "float32",
                 snapshot_sampler: str = "dpm-solver++", snapshot_steps: int = 25):
        self.ctx = ctx
        self.unet_config, self.schedule = unet, schedule
        self.net = build_unet(unet).to(ctx.device)
        self.net_ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        if ctx.device.type == "cuda":
            for net in (self.net, self.net_ema):
                net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        self.scheduler = training_scheduler(schedule)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(ctx.device)
        self.ema, self.ema_warmup = ema, ema_warmup
        self.snapshot_sampler, self.snapshot_steps = snapshot_sampler, snapshot_steps
        # the study: float32 (guided-diffusion without --use_fp16); bf16 autocast is opt-in (CUDA only),
        # with the timestep embedding kept in float32 (models/unet.py, keep_time_embedding_float32)
        self.precision, self.autocast = precisions.resolve(precision, ctx.device)
        self.settings = {"unet": unet, "schedule": schedule, "batch": batch, "lr": lr, "weight_decay": weight_decay,
                         "ema": ema, "ema_warmup": ema_warmup, "precision": self.precision}

    def state(self) -> dict:
        """The network, its EMA and the optimizer, by name."""
        return {"net": self.net, "net_ema": self.net_ema, "opt": self.opt}

    def step(self, reals: torch.Tensor, step: int, gen: torch.Generator) -> dict:
        """One AdamW step on the MSE between the predicted and the true noise: t uniform in
        [0, T), x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε, both drawn for the global batch from `gen`.
        `reals`: this rank's (B / world_size, C, H, W) float32 in [-1, 1]. Returns {"loss"} (this
        rank's mean over pixels)."""
        B = reals.shape[0] * self.ctx.world_size
        t = local(torch.randint(0, self.schedule["timesteps"], (B,), generator=gen), self.ctx)
        noise = local(torch.randn(B, *reals.shape[1:], generator=gen), self.ctx)
        if reals.is_contiguous(memory_format=torch.channels_last):
            noise = noise.contiguous(memory_format=torch.channels_last)
        a = self.alphas_cumprod[t].float()[:, None, None, None]
        noisy = a.sqrt() * reals + (1 - a).sqrt() * noise
        with self.autocast:
            predicted = self.net(noisy, t).sample
        loss = F.mse_loss(predicted.float(), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_gradients(self.net.parameters(), self.ctx)
        self.opt.step()
        self._update_ema(step)
        return {"loss": loss.item()}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = min(self.ema, (1 + step) / (10 + step)) if self.ema_warmup else self.ema
        for p_ema, p in zip(self.net_ema.parameters(), self.net.parameters()):
            p_ema.lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def snapshot(self, gen: torch.Generator, n: int = 16) -> torch.Tensor:
        """`n` images (n, C, size, size) float32 in [-1, 1] from the EMA network with the snapshot
        sampler; image i's generator is seeded from `gen`."""
        c, s = self.unet_config["channels"], self.unet_config["size"]
        scheduler = sampler(self.schedule, self.snapshot_sampler, self.snapshot_steps)
        generators = [torch.Generator().manual_seed(int(torch.randint(0, 2**31, (), generator=gen)))
                      for _ in range(n)]
        return denoise(self.net_ema, scheduler, (n, c, s, s), generators, self.ctx.device, self.autocast,
                       progress=False)

    def export(self) -> dict:
        """{"unet", "schedule", "weights" (EMA), "raw_weights"}: what sampling needs."""
        return {"unet": self.unet_config, "schedule": self.schedule, "weights": self.net_ema.state_dict(),
                "raw_weights": self.net.state_dict()}
