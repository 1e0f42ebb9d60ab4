"""StyleGAN2 (config F: skip generator, residual discriminator) for N-channel images.

Written for this project in plain PyTorch from the paper (Karras et al., "Analyzing and Improving
the Image Quality of StyleGAN", 2020); NVlabs' code is under a non-commercial licence and is not
used. Defaults are NVlabs' `--cfg=stylegan2` settings: 8-layer mapping (z = w = 512, learning
rate multiplier 0.01), channel base 32768, at most 512 channels, minibatch-std group 4, w_avg tracked
with β = 0.998 (NVlabs/stylegan3 training/networks_stylegan2.py, line 202, the code the study ran;
stylegan2-ada-pytorch's networks.py has 0.995, line 185).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medmem.models.layers import (
    EqualConv2d, EqualLinear, bias_act, fir_filter, modulated_conv2d, upsample2d,
)


def channels_per_resolution(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """{r: min(channel_base // r, channel_max)} for r = 4, 8, … `resolution` (a power of two), as
    NVlabs' `channels_dict` (training/networks_stylegan2.py, line 485): 512 channels up to 64², then
    256, 128 at 256² with the defaults."""
    return {2**i: min(channel_base // 2**i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


class MappingNetwork(nn.Module):
    """z → w: z normalised to unit second moment (ε = 1e-8), then `layers` fully connected layers
    with leaky ReLU and learning-rate multiplier `lr_multiplier` (NVlabs' `MappingNetwork`,
    training/networks_stylegan2.py lines 191-270: 8 layers, 0.01, w_avg β = 0.998, line 202).
    Holds the buffer `w_avg` (w_dim,), the tracked average of w for truncation; the training task
    updates it (StyleGAN2Task), this module only reads it.
    """

    def __init__(self, z_dim=512, w_dim=512, num_ws=14, layers=8, lr_multiplier=0.01, w_avg_beta=0.998):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_multiplier=lr_multiplier, activation=True)
                                    for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, truncation_psi=1.0):
        """z (N, z_dim) float → ws (N, num_ws, w_dim), the same w repeated for every layer; with
        `truncation_psi` ≠ 1, w_avg + ψ (w − w_avg) (ψ = 1: no truncation, the study's)."""
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x


class StyledConv(nn.Module):
    """One 3×3 modulated convolution of the synthesis network (NVlabs' `SynthesisLayer`,
    training/networks_stylegan2.py lines 274-336): affine w → styles (bias initialised to 1),
    modulated and demodulated convolution (2× upsampling with `up`), per-pixel noise scaled by the
    learned `noise_strength` (initially 0), bias, leaky ReLU · √2, optional clamp to ±`clamp`.
    `noise_const` (resolution, resolution) is the fixed noise of noise_mode="const"."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, up=False, clamp=None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("fir", fir_filter(), persistent=False)
        self.up, self.resolution, self.clamp = up, resolution, clamp
        self.weight_gain = 1 / math.sqrt(in_channels * 9)

    def forward(self, x, w, noise=None):
        """x (N, in, r', r') with r' = r/2 when `up`, else r; w (N, w_dim); noise (N, 1, r, r) or
        None for `noise_const`. Returns (N, out, r, r)."""
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, up=self.up, fir=self.fir, padding=1,
                             fused=not self.training)
        if noise is None:
            noise = self.noise_const[None, None]
        x = x + (noise * self.noise_strength).to(x.dtype)
        return bias_act(x, self.bias, act=True, clamp=self.clamp)


class ToImage(nn.Module):
    """1×1 modulated convolution without demodulation to the image channels, plus bias, no
    activation (NVlabs' `ToRGBLayer`, training/networks_stylegan2.py lines 338-356: styles scaled
    by 1/√in_channels). Input (N, in, r, r) and w (N, w_dim); output (N, img_channels, r, r)."""

    def __init__(self, in_channels, out_channels, w_dim, clamp=None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.clamp = clamp

    def forward(self, x, w):
        """(N, in, r, r), (N, w_dim) → (N, img_channels, r, r)."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=not self.training)
        return bias_act(x, self.bias, act=False, clamp=self.clamp)


class SynthesisNetwork(nn.Module):
    """ws → image, StyleGAN2's skip generator (config F; NVlabs' `SynthesisNetwork` and
    `SynthesisBlock` with architecture='skip', training/networks_stylegan2.py lines 363-524):
    a learned constant (C₄, 4, 4), one StyledConv at 4², then per resolution 8 … `resolution` an
    upsampling StyledConv and a StyledConv; each resolution's ToImage output is added to the 2×
    FIR-upsampled image of the previous one. `num_ws` = convolutions + 1 (the last ToImage's w).
    Channels per resolution from `channels_per_resolution`; `clamp` (None: none) bounds every
    convolution's output (NVlabs uses 256 with fp16).
    """

    def __init__(self, w_dim, resolution, img_channels, channel_base, channel_max, clamp=None):
        super().__init__()
        self.resolution, self.img_channels = resolution, img_channels
        ch = channels_per_resolution(resolution, channel_base, channel_max)
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        self.convs = nn.ModuleList()
        self.to_images = nn.ModuleList()
        self.register_buffer("fir", fir_filter(), persistent=False)
        for res, channels in ch.items():
            if res == 4:
                self.convs.append(StyledConv(channels, channels, w_dim, 4, clamp=clamp))
            else:
                self.convs.append(StyledConv(ch[res // 2], channels, w_dim, res, up=True, clamp=clamp))
                self.convs.append(StyledConv(channels, channels, w_dim, res, clamp=clamp))
            self.to_images.append(ToImage(channels, img_channels, w_dim, clamp=clamp))
        self.num_ws = len(self.convs) + 1

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(r, r) of every convolution's noise input, in order (for explicit per-image noise)."""
        return [(c.resolution, c.resolution) for c in self.convs]

    def forward(self, ws, noise=None):
        """ws: (N, num_ws, w_dim); noise: per-conv (N, 1, r, r) tensors (see `noise_shapes`), or None
        for the constant noise. Returns images (N, img_channels, resolution, resolution) in ws's
        dtype, on the [-1, 1] scale of the training data (not clamped)."""
        x = self.const[None].repeat(ws.shape[0], 1, 1, 1).to(ws.dtype)
        img = None
        conv = 0
        for level, to_image in enumerate(self.to_images):
            n_convs = 1 if level == 0 else 2
            for _ in range(n_convs):
                x = self.convs[conv](x, ws[:, conv], None if noise is None else noise[conv])
                conv += 1
            y = to_image(x, ws[:, conv])
            img = y if img is None else upsample2d(img, self.fir).to(y.dtype) + y
        return img


class Generator(nn.Module):
    """StyleGAN2's generator: MappingNetwork then SynthesisNetwork (NVlabs' `Generator`,
    training/networks_stylegan2.py lines 527-552, unconditional). Defaults: the study's 256², 5
    channels, z = w = 512, 8 mapping layers, channel base 32768, at most 512 channels, mapping
    learning-rate multiplier 0.01, no clamp. `config` holds the constructor's arguments (stored in
    network.pt to rebuild it)."""

    def __init__(self, resolution=256, img_channels=5, z_dim=512, w_dim=512, mapping_layers=8,
                 channel_base=32768, channel_max=512, mapping_lr_multiplier=0.01, clamp=None):
        super().__init__()
        self.config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, w_dim=w_dim,
                           mapping_layers=mapping_layers, channel_base=channel_base, channel_max=channel_max,
                           mapping_lr_multiplier=mapping_lr_multiplier, clamp=clamp)
        self.z_dim = z_dim
        self.synthesis = SynthesisNetwork(w_dim, resolution, img_channels, channel_base, channel_max, clamp)
        self.mapping = MappingNetwork(z_dim, w_dim, self.synthesis.num_ws, mapping_layers, mapping_lr_multiplier)

    def forward(self, z, truncation_psi=1.0, noise=None):
        """z (N, z_dim) float → images (N, img_channels, resolution, resolution), nominally in
        [-1, 1] (not clamped); `truncation_psi` as MappingNetwork, `noise` as SynthesisNetwork."""
        return self.synthesis(self.mapping(z, truncation_psi), noise)


class MinibatchStd(nn.Module):
    """Append the std over groups of `group_size` consecutive samples (contiguous groups, so a batch
    split across processes forms the same groups as the whole batch).

    As NVlabs' `MinibatchStdLayer` with one feature channel (training/networks_stylegan2.py lines
    644-670: std over the group, ε = 1e-8, averaged over channels and pixels), except that NVlabs
    groups samples with a stride (x.reshape(G, -1, ...), line 656) and needs N divisible by the
    group; here the group is min(group_size, N), or gcd(N, group) when it does not divide N.
    (N, C, H, W) → (N, C + 1, H, W); the statistic is computed in float32 under fp16/bf16.
    """

    def __init__(self, group_size=4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x):
        """(N, C, H, W) → (N, C + 1, H, W)."""
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            g = math.gcd(n, g)
        y = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).reshape(n // g, g, c, h, w)
        y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # (n/g,)
        y = y.repeat_interleave(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorBlock(nn.Module):
    """StyleGAN2's residual discriminator block (config F; NVlabs' `DiscriminatorBlock` with
    architecture='resnet', training/networks_stylegan2.py lines 555-641): two 3×3 convolutions, the
    second downsampling, plus a 1×1 downsampling skip without bias; both paths scaled by √0.5
    (lines 627-629). (N, in, H, W) → (N, out, H/2, W/2)."""

    def __init__(self, in_channels, out_channels, clamp=None):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation=True, clamp=clamp)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation=True, down=True, gain=math.sqrt(0.5),
                                 clamp=clamp)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True, gain=math.sqrt(0.5))

    def forward(self, x):
        """(N, in, H, W) → (N, out, H/2, W/2)."""
        return self.skip(x) + self.conv1(self.conv0(x))


class Discriminator(nn.Module):
    """StyleGAN2's residual discriminator (NVlabs' `Discriminator` and `DiscriminatorEpilogue`,
    training/networks_stylegan2.py lines 673-790, unconditional): 1×1 from-image convolution,
    DiscriminatorBlocks down to 4², minibatch std (group `mbstd_group`, default 4, line 680), a 3×3
    convolution, two fully connected layers to one logit. `config` holds the constructor's
    arguments."""

    def __init__(self, resolution=256, img_channels=5, channel_base=32768, channel_max=512, mbstd_group=4,
                 clamp=None):
        super().__init__()
        self.config = dict(resolution=resolution, img_channels=img_channels, channel_base=channel_base,
                           channel_max=channel_max, mbstd_group=mbstd_group, clamp=clamp)
        ch = channels_per_resolution(resolution, channel_base, channel_max)
        self.from_image = EqualConv2d(img_channels, ch[resolution], 1, activation=True)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(ch[r], ch[r // 2], clamp)
                                      for r in sorted(ch, reverse=True) if r > 4])
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(ch[4] + 1, ch[4], 3, activation=True, clamp=clamp)
        self.fc = EqualLinear(ch[4] * 16, ch[4], activation=True)
        self.out = EqualLinear(ch[4], 1)

    def forward(self, img):
        """img (N, img_channels, resolution, resolution) float, data scale [-1, 1] → logits (N, 1)
        (real > fake; no sigmoid)."""
        x = self.blocks(self.from_image(img))
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))



__all__ = ["Generator", "Discriminator"]
