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
    return {2**i: min(channel_base // 2**i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


class MappingNetwork(nn.Module):
    def __init__(self, z_dim=512, w_dim=512, num_ws=14, layers=8, lr_multiplier=0.01, w_avg_beta=0.998):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_multiplier=lr_multiplier, activation=True)
                                    for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, truncation_psi=1.0):
        """ws (n, num_ws, w_dim); `w_avg` (for truncation) is tracked by the training task."""
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x


class StyledConv(nn.Module):
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
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, up=self.up, fir=self.fir, padding=1)
        if noise is None:
            noise = self.noise_const[None, None]
        x = x + (noise * self.noise_strength).to(x.dtype)
        return bias_act(x, self.bias, act=True, clamp=self.clamp)


class ToImage(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, clamp=None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.clamp = clamp

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, act=False, clamp=self.clamp)


class SynthesisNetwork(nn.Module):
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
        return [(c.resolution, c.resolution) for c in self.convs]

    def forward(self, ws, noise=None):
        """ws: (n, num_ws, w_dim); noise: per-conv (n, 1, r, r) tensors, or None for the constant noise."""
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
        return self.synthesis(self.mapping(z, truncation_psi), noise)


class MinibatchStd(nn.Module):
    """Append the std over groups of `group_size` consecutive samples (contiguous groups, so a batch
    split across processes forms the same groups as the whole batch)."""

    def __init__(self, group_size=4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            g = math.gcd(n, g)
        y = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).reshape(n // g, g, c, h, w)
        y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # (n/g,)
        y = y.repeat_interleave(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels, out_channels, clamp=None):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation=True, clamp=clamp)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation=True, down=True, gain=math.sqrt(0.5),
                                 clamp=clamp)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True, gain=math.sqrt(0.5))

    def forward(self, x):
        return self.skip(x) + self.conv1(self.conv0(x))


class Discriminator(nn.Module):
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
        x = self.blocks(self.from_image(img))
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Generator", "Discriminator", "count_parameters"]
