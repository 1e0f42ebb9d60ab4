"""StyleGAN2 training phases as NVlabs' `--cfg=stylegan2` runs them, on the shared loop.

The study ran NVlabs/stylegan3 (muhamadusman/Synthetic_Memorization, styleGAN/readme.md), whose
`--cfg=stylegan2` is followed here (file and line: NVlabs/stylegan3 at c233a919):
non-saturating logistic loss; lazy R1 on reals every 16 minibatches (γ from config); path-length
regularization every 4 (weight 2, decay 0.01, batch shrink 2, the gradient through the running
mean kept); style mixing 0.9, one coin and one cutoff per minibatch; Adam (0, 0.99),
learning rate 0.002, both adjusted for lazy regularization; generator EMA over batch × 10/32 kimg
with ramp-up 0.05 (training/training_loop.py, lines 107 and 301-304, cur_nimg counted before the minibatch, line 311; train.py disables it only when
resuming from a pickle, line 265); w_avg (truncation) updated in the discriminator pass only
(training/loss.py, line 105: `run_G(..., update_emas=True)` in Dmain, False in Gmain and Greg);
gradients all-reduced, then non-finite values replaced (NaN → 0, ±inf → ±1e5; training_loop.py,
lines 285-289). For the same weights and inputs, each phase's gradient equals that of NVlabs'
`StyleGAN2Loss` (tests/unit/test_stylegan2_nvlabs_training.py).

Both regularisation passes (R1, path length) run in float32 even when the rest runs under bf16
autocast: NVlabs keeps all but the four highest resolutions in float32 (fp16 there, conv clamp 256),
and under bf16 the R1 gradient is off by ~40 %, the path-length gradient by ~8 %.

Path length: `pl_no_weight_grad=True` (train.py, line 241) makes NVlabs skip the gradient w.r.t.
the convolution weights while computing the path-length gradient (loss.py, line 89;
torch_utils/ops/conv2d_gradfix.py, line 148). With its non-fused training convolutions
(`fused_modconv_default='inference_only'`, train.py line 240) those weights do not depend on w, so
the skipped gradient is never part of the result: it saves time, it changes no value; the weight
gradients of the penalty itself are complete (the later backward runs outside that context).
Here the path-length gradient is taken with `torch.autograd.grad(..., inputs=ws)`, which computes
no parameter gradient at all (autograd prunes every branch that does not lead to ws): the same
values, the same saving.

Optional augmentation (flips, integer translations) is applied to everything the discriminator
sees; it is built from indexing, so R1's double backward stays exact.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from medmem import precision as precisions
from medmem.models.stylegan2 import Discriminator, Generator
from medmem.training.augment import augment
from medmem.training.distributed import Context, all_reduce_gradients, all_reduce_mean, local


class _Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.zeros([]))


def sanitize_gradients(params) -> None:
    """NVlabs' `nan_to_num` after the all-reduce (training_loop.py, line 289): NaN → 0, +inf → 1e5,
    −inf → −1e5, in place, on every gradient."""
    for p in params:
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 → float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def r1_penalty(logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """R1: ‖∇_x D(x)‖² per image (N,), float32, with the graph kept for the weights' gradient.
    Run D for `logits` in float32 (`precision.float32`): under bf16 autocast this gradient is off by
    tens of per cent."""
    grad, = torch.autograd.grad(_wide(logits).sum(), reals, create_graph=True)
    return _wide(grad).square().sum([1, 2, 3])


def path_lengths(fake: torch.Tensor, ws: torch.Tensor, pl_noise: torch.Tensor) -> torch.Tensor:
    """‖J_wᵀ y‖ per image (N,) for images `fake` (N, C, H, W) made from `ws` (N, num_ws, w_dim) and
    y = `pl_noise` (N(0, 1) / √(HW)): the gradient is taken w.r.t. ws only, so no parameter gradient
    is computed here (the effect of NVlabs' pl_no_weight_grad); graph kept for the weights' gradient."""
    grad, = torch.autograd.grad((_wide(fake) * pl_noise).sum(), ws, create_graph=True)
    return _wide(grad).square().sum(2).mean(1).sqrt()


class StyleGAN2Task:
    """StyleGAN2 training (a `medmem.training.loop.TrainingTask`), NVlabs' `--cfg=stylegan2` phases.

    `generator`, `discriminator`: the constructor arguments of `Generator` and `Discriminator`;
    `ctx`: the process's rank and device; `batch`: the global minibatch. Defaults (NVlabs/stylegan3
    at c233a919): `lr` 0.002 for both (train.py, lines 148 and 214); Adam β = (0, 0.99), ε = 1e-8
    (train.py, lines 192-193), lr and β adjusted for lazy regularisation by ratio interval /
    (interval + 1) (training/training_loop.py, lines 200-203); `style_mixing` 0.9, `pl_weight` 2,
    `g_reg_interval` 4 (train.py, lines 237-239); `d_reg_interval` 16 (training_loop.py, line 109);
    `ema_kimg` batch · 10 / 32 (train.py, line 234); `ema_rampup` 0.05 (training_loop.py, line 107;
    None: no ramp-up). `r1_gamma` γ of R1 (NVlabs has no default: `--gamma` is required; the study
    used 8). `flip`, `translate`: optional augmentation (the study: none). `precision`: "bf16"
    (autocast on CUDA for the main passes; float32 on the CPU) or "float32"; ValueError otherwise.
    """

    name = "stylegan2"

    def __init__(self, generator: dict, discriminator: dict, ctx: Context, batch: int, r1_gamma: float = 8.0,
                 pl_weight: float = 2.0, style_mixing: float = 0.9, lr: float = 0.002, g_reg_interval: int = 4,
                 d_reg_interval: int = 16, ema_kimg: float | None = None, ema_rampup: float | None = 0.05,
                 flip: bool = False, translate: int = 0, precision: str = "bf16"):
        self.ctx = ctx
        self.G = Generator(**generator).to(ctx.device)
        self.D = Discriminator(**discriminator).to(ctx.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if ctx.device.type == "cuda":
            for net in (self.G, self.D, self.G_ema):
                net.to(memory_format=torch.channels_last)
        self.opt = {}
        for key, net, interval in (("G", self.G, g_reg_interval), ("D", self.D, d_reg_interval)):
            ratio = interval / (interval + 1)
            self.opt[key] = torch.optim.Adam(net.parameters(), lr=lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)
        self.pl_mean = _Scalar().to(ctx.device)
        self.batch, self.r1_gamma, self.pl_weight, self.style_mixing = batch, r1_gamma, pl_weight, style_mixing
        self.g_reg_interval, self.d_reg_interval = g_reg_interval, d_reg_interval
        self.ema_kimg = batch * 10 / 32 if ema_kimg is None else ema_kimg
        self.ema_rampup = ema_rampup  # 0.05 as NVlabs/stylegan3 (None only when resuming from a pickle)
        self.flip, self.translate = flip, translate
        # bf16 autocast (CUDA only) for the main passes; the regularisation passes always in float32
        self.precision, self.autocast = precisions.resolve(precision, ctx.device)
        self.settings = {"generator": generator, "discriminator": discriminator, "batch": batch,
                         "r1_gamma": r1_gamma, "pl_weight": pl_weight, "style_mixing": style_mixing, "lr": lr,
                         "ema_kimg": self.ema_kimg, "ema_rampup": ema_rampup, "flip": flip, "translate": translate,
                         "precision": self.precision}

    def state(self) -> dict:
        """G, D, G_ema, both optimizers and the path-length mean, by name."""
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema, "opt_G": self.opt["G"], "opt_D": self.opt["D"],
                "pl_mean": self.pl_mean}

    # --- randomness: drawn for the whole global batch from the step's generator, then sliced ---
    def _latents(self, gen, n_global):
        G = self.G
        z, z2 = (torch.randn(n_global, G.z_dim, generator=gen) for _ in range(2))
        # style mixing as NVlabs: one coin and one cutoff layer for the whole minibatch (loss.py, lines 45-49)
        mix = (torch.rand(1, generator=gen) < self.style_mixing).repeat(n_global)
        cutoff = torch.randint(1, G.synthesis.num_ws, (1,), generator=gen).repeat(n_global)
        noise = [torch.randn(n_global, 1, *shape, generator=gen) for shape in G.synthesis.noise_shapes()]
        return [local(v, self.ctx) for v in (z, z2, mix, cutoff)], [local(v, self.ctx) for v in noise]

    def _augment_params(self, gen, n_global):
        flip = torch.rand(n_global, generator=gen) < (0.5 if self.flip else 0.0)
        shift = torch.randint(-self.translate, self.translate + 1, (n_global, 2), generator=gen)
        return local(flip, self.ctx), local(shift, self.ctx)

    def _generate(self, latents, noise, update_w_avg: bool = False):
        z, z2, mix, cutoff = latents
        ws = self.G.mapping(z)
        if update_w_avg:  # the tracked w average (truncation), over the global batch, in the D pass only
            with torch.no_grad():
                mapping = self.G.mapping
                batch_mean = all_reduce_mean(ws[:, 0].detach().float().mean(0), self.ctx)
                mapping.w_avg.copy_(batch_mean.lerp(mapping.w_avg, mapping.w_avg_beta))
        if self.style_mixing > 0:
            ws2 = self.G.mapping(z2)
            layer = torch.arange(ws.shape[1], device=ws.device)[None, :, None]
            ws = torch.where(mix[:, None, None] & (layer >= cutoff[:, None, None]), ws2, ws)
        return self.G.synthesis(ws, noise), ws

    def _discriminate(self, images, gen, n_global):
        if self.flip or self.translate:
            images = augment(images, *self._augment_params(gen, n_global))
        return self.D(images)

    def _optimize(self, key, net, loss):
        self.opt[key].zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_gradients(net.parameters(), self.ctx)
        sanitize_gradients(net.parameters())
        self.opt[key].step()

    def step(self, reals: torch.Tensor, step: int, gen: torch.Generator) -> dict:
        """One minibatch of every phase: G main, G path-length regularisation (every
        `g_reg_interval`-th step, on half the batch), D main, D R1 (every `d_reg_interval`-th
        step), then the EMA. `reals`: this rank's (B / world_size, C, H, W) float32 in [-1, 1];
        all latents, noise and augmentation parameters are drawn for the global batch B from `gen`.
        Returns {"loss_G", "loss_D"} and, on regularisation steps, "pl_penalty" and "r1_penalty"
        (this rank's means)."""
        B = reals.shape[0] * self.ctx.world_size
        losses = {}
        # G main: non-saturating logistic loss
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        latents, noise = self._latents(gen, B)
        with self.autocast:
            fake, _ = self._generate(latents, noise)
            loss = F.softplus(-self._discriminate(fake, gen, B)).mean()
        self._optimize("G", self.G, loss)
        losses["loss_G"] = loss.item()
        # G reg: path length, on half the batch
        if step % self.g_reg_interval == 0 and self.pl_weight > 0:
            half = max(B // 2, self.ctx.world_size)
            latents, noise = self._latents(gen, half)
            with precisions.float32(self.ctx.device):
                fake, ws = self._generate(latents, noise)
            h, w = fake.shape[2:]
            pl_noise = local(torch.randn(half, *fake.shape[1:], generator=gen), self.ctx) / math.sqrt(h * w)
            lengths = path_lengths(fake, ws, pl_noise)
            local_mean = lengths.mean()
            mean = self.pl_mean.value.lerp(all_reduce_mean(local_mean.detach(), self.ctx), 0.01)
            self.pl_mean.value.copy_(mean)
            penalty = (lengths - mean).square()
            # NVlabs' penalty also differentiates the minibatch's 1 % share of the new running mean
            # (loss.py, lines 91-93: pl_mean is detached only where it is stored), which adds
            # −0.02 · mean(L − m) · ∂mean(L); both means over the global batch (a zero-valued term), so
            # that data parallel gives one process's gradient
            excess = all_reduce_mean((lengths - mean).mean().detach(), self.ctx)
            through_mean = -0.02 * excess * (local_mean - local_mean.detach())
            loss = ((penalty + through_mean) * self.pl_weight).mean() * self.g_reg_interval \
                + fake[:, 0, 0, 0].float().mean() * 0
            self._optimize("G", self.G, loss)
            losses["pl_penalty"] = penalty.mean().item()
        # D main
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        latents, noise = self._latents(gen, B)
        with self.autocast:
            with torch.no_grad():
                fake, _ = self._generate(latents, noise, update_w_avg=True)
            loss = (F.softplus(self._discriminate(fake, gen, B)).mean()
                    + F.softplus(-self._discriminate(reals, gen, B)).mean())
        self._optimize("D", self.D, loss)
        losses["loss_D"] = loss.item()
        # D reg: lazy R1 on the reals
        if step % self.d_reg_interval == 0 and self.r1_gamma > 0:
            real = reals.detach().requires_grad_(True)
            with precisions.float32(self.ctx.device):
                logits = self._discriminate(real, gen, B)
                penalty = r1_penalty(logits, real)
            loss = (penalty * (self.r1_gamma / 2)).mean() * self.d_reg_interval + logits.float().mean() * 0
            self._optimize("D", self.D, loss)
            losses["r1_penalty"] = penalty.mean().item()
        self._update_ema(B, step * B)  # NVlabs' cur_nimg: images shown before this minibatch
        return losses

    @torch.no_grad()
    def _update_ema(self, batch: int, nimg: int) -> None:
        """G_ema ← lerp(G, G_ema, β), β = 0.5^(batch / ema_nimg), ema_nimg ramped up to nimg × ema_rampup
        (NVlabs/stylegan3 training_loop.py, lines 301-304)."""
        ema_nimg = self.ema_kimg * 1000
        if self.ema_rampup is not None:
            ema_nimg = min(ema_nimg, nimg * self.ema_rampup)
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    @torch.no_grad()
    def snapshot(self, gen: torch.Generator, n: int = 16) -> torch.Tensor:
        """`n` images (n, C, H, W) float32 from G_ema (ψ = 1, constant noise), z drawn from `gen`."""
        z = torch.randn(n, self.G.z_dim, generator=gen).to(self.ctx.device)
        with self.autocast:
            return self.G_ema(z).float()

    def export(self) -> dict:
        """{"generator": G_ema's constructor config, "weights": G_ema's state dict}: what sampling needs."""
        return {"generator": self.G_ema.config, "weights": self.G_ema.state_dict()}
