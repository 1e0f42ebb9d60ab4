"""The study's diffusion training (guided-diffusion, unconditional) on the shared loop.

t uniform over the T steps, ε-prediction (or v-prediction, beyond the study: see
`medmem.sampling.samplers`), MSE over all pixels; AdamW (lr 1e-4, no weight decay,
guided-diffusion's default); EMA of the weights (0.9999 in the study, no warm-up; short runs may
warm it up as diffusers' EMAModel does: decay ≤ (1 + step) / (10 + step)). Precision: float32, the
study's (guided-diffusion's `use_fp16=False` default); bf16 autocast on CUDA is opt-in. Noise and timesteps are
drawn for the global batch from the step's generator and sliced per rank, so any number of
processes trains the same model.

Options beyond the study: augmentation of the training images (`flip`, `translate`: the model
learns the augmented distribution, as diffusion augmentation usually does), and DP-SGD through
Opacus (`dp`, see `medmem.training.privacy`).
"""

from __future__ import annotations

import copy
import torch
import torch.nn.functional as F

from medmem import precision as precisions
from medmem.errors import InputError
from medmem.models.unet import build_unet
from medmem.sampling.diffusion import denoise
from medmem.sampling.samplers import prediction_target, sampler, training_scheduler
from medmem.training.augment import augment, augment_params
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

    `flip`, `translate`: augmentation of every step's training images (horizontal flips with
    probability 1/2, integer shifts up to ± translate pixels with zero fill; the study: none),
    drawn from the step's generator before t and the noise, as StyleGAN2Task's; off, the step
    draws exactly what it drew without them. `dp`: DP-SGD settings (`medmem.training.privacy.dp_options`;
    None: off) with `n_train` training images and `steps` optimiser steps for the whole run; DP-SGD
    trains in float32 in one process (InputError for bf16 or several processes).
    """

    name = "diffusion"

    def __init__(self, unet: dict, schedule: dict, ctx: Context, batch: int, lr: float = 1e-4,
                 weight_decay: float = 0.0, ema: float = 0.9999, ema_warmup: bool = False, precision: str = "float32",
                 snapshot_sampler: str = "dpm-solver++", snapshot_steps: int = 25,
                 flip: bool = False, translate: int = 0, dp: dict | None = None, n_train: int | None = None,
                 steps: int | None = None):
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
        self.flip, self.translate = bool(flip), int(translate)
        if self.flip or self.translate:  # absent when off: the checkpoints of earlier runs still resume
            self.settings.update(flip=self.flip, translate=self.translate)
        self.private = None
        if dp is not None:
            if ctx.world_size > 1:
                raise InputError("dp: DP-SGD trains in one process only (Opacus's accounting of torchrun's "
                                 "shards is not wired here): run without torchrun or set dp_epsilon: null")
            if self.precision != "float32":
                raise InputError("dp: DP-SGD trains in float32 only: set precision: float32")
            if n_train is None or steps is None:
                raise ValueError("DP-SGD needs n_train and steps (the run's optimiser steps) for its accounting")
            from medmem.training.privacy import PrivateTraining

            self.private = PrivateTraining(self.net, self.opt, n_train, batch, steps, dp)
            self.opt = self.private.optimizer
            self.settings["dp"] = {**dp, "steps": steps, "n_train": n_train}

    def state(self) -> dict:
        """The network, its EMA and the optimizer, by name (and DP-SGD's accountant)."""
        state = {"net": self.net, "net_ema": self.net_ema, "opt": self.opt}
        if self.private is not None:
            from medmem.training.privacy import AccountantState

            state["accountant"] = AccountantState(self.private.accountant)
        return state

    def batch_indices(self, seed: int, step: int):
        """DP-SGD only: the loop's minibatch of step `step` (Poisson sampling, see
        `PrivateTraining.batch_indices`); None without DP (the loop's own epochs)."""
        return None if self.private is None else self.private.batch_indices(seed, step)

    def log_values(self) -> dict:
        """Columns of the log row: DP-SGD's spent ε and its δ (nothing without DP)."""
        if self.private is None:
            return {}
        return {"epsilon": self.private.spent(), "delta": self.private.dp["delta"]}

    def step(self, reals: torch.Tensor, step: int, gen: torch.Generator) -> dict:
        """One AdamW step on the MSE between the network's output and its target, the true noise ε
        (the study's) or v = √ᾱ_t · ε − √(1 − ᾱ_t) · x0 (the schedule's "prediction"): t uniform in
        [0, T), x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε, both drawn for the global batch from `gen`.
        `reals`: this rank's (B / world_size, C, H, W) float32 in [-1, 1], augmented first when
        `flip` or `translate`. With DP-SGD, `reals` is the step's Poisson minibatch (possibly empty:
        a noise-only step), per-sample gradients are clipped and noised by Opacus. Returns {"loss"}
        (this rank's mean over pixels; {} for an empty minibatch)."""
        B = reals.shape[0] * self.ctx.world_size
        if self.flip or self.translate:
            flips, shift = augment_params(gen, B, self.flip, self.translate)
            reals = augment(reals, local(flips, self.ctx).to(reals.device), local(shift, self.ctx).to(reals.device))
        t = local(torch.randint(0, self.schedule["timesteps"], (B,), generator=gen), self.ctx)
        noise = local(torch.randn(B, *reals.shape[1:], generator=gen), self.ctx)
        if reals.is_contiguous(memory_format=torch.channels_last):
            noise = noise.contiguous(memory_format=torch.channels_last)
        a = self.alphas_cumprod[t].float()[:, None, None, None]
        noisy = a.sqrt() * reals + (1 - a).sqrt() * noise
        target = prediction_target(self.schedule, reals, noise, a)
        if self.private is not None:
            return self._private_step(noisy, t, target, step, gen)
        with self.autocast:
            predicted = self.net(noisy, t).sample
        loss = F.mse_loss(predicted.float(), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_gradients(self.net.parameters(), self.ctx)
        self.opt.step()
        self._update_ema(step)
        return {"loss": loss.item()}

    def _private_step(self, noisy, t, target, step: int, gen: torch.Generator) -> dict:
        """DP-SGD's step: the mean over pixels and images is Opacus's loss_reduction "mean", so each
        image's gradient is that of its own pixel-mean loss before clipping."""
        self.opt.zero_grad(set_to_none=True)
        self.private.set_noise_generator(gen, self.ctx.device)
        if len(noisy) == 0:
            self.private.empty_step()
            self._update_ema(step)
            return {}
        predicted = self.private.model(noisy, t).sample
        loss = F.mse_loss(predicted.float(), target)
        loss.backward()
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
        """{"unet", "schedule", "weights" (EMA), "raw_weights"}: what sampling needs; "training": the
        augmentation; "privacy" with DP-SGD: the accountant's spent ε, its δ, per training image
        (`PrivateTraining.record`)."""
        out = {"unet": self.unet_config, "schedule": self.schedule, "weights": self.net_ema.state_dict(),
               "raw_weights": self.net.state_dict(), "training": {"flip": self.flip, "translate": self.translate}}
        if self.private is not None:
            out["privacy"] = self.private.record()
        return out
