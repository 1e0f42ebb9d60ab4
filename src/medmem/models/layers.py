"""Building blocks of StyleGAN2, in plain PyTorch: equalized learning rate, FIR resampling,
modulated convolution. Written for this project from the StyleGAN2 paper (Karras et al. 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def fir_filter(taps=(1, 3, 3, 1), device=None) -> torch.Tensor:
    """The separable FIR low-pass kernel outer(taps, taps) / sum, float32 (len(taps), len(taps)),
    summing to 1. (1, 3, 3, 1) is StyleGAN2's resampling filter (NVlabs/stylegan3
    training/networks_stylegan2.py, line 142: `resample_filter = [1,3,3,1]`)."""
    k = torch.tensor(taps, dtype=torch.float32, device=device)
    k = torch.outer(k, k)
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Zero-insert upsampling by `up`, zero padding by `pad` = (before, after) on both axes, FIR
    filtering with `kernel` (k, k) times `gain`, then keeping every `down`-th pixel: NVlabs'
    upfirdn2d (torch_utils/ops/upfirdn2d.py, `_upfirdn2d_ref`, line 167) for a square filter, in
    plain PyTorch ops that all have a double backward (R1).

    x: (N, C, H, W) float; returns (N, C, H', W') with H' = (H·up + pad[0] + pad[1] − k + 1) / down
    (rounded up), in x's dtype (the kernel is cast to it).
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = (kernel * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x, kernel):
    """2× FIR upsampling (N, C, H, W) → (N, C, 2H, 2W) with `kernel` (4, 4), gain 4 to keep the
    mean (as NVlabs' upsample2d, upfirdn2d.py line 313, with padding (2, 1))."""
    return upfirdn2d(x, kernel, up=2, pad=(2, 1), gain=4.0)


def downsample2d(x, kernel):
    """2× FIR downsampling (N, C, H, W) → (N, C, H/2, W/2) with `kernel` (4, 4) (as NVlabs'
    downsample2d, upfirdn2d.py line 352)."""
    return upfirdn2d(x, kernel, down=2, pad=(1, 1))


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, act: bool, clamp: float | None = None):
    """x + bias (per channel, dim 1), then with `act` leaky ReLU (slope 0.2) times √2, then clamping
    to ±`clamp`: NVlabs' `lrelu` with its default α = 0.2 and gain √2 (torch_utils/ops/bias_act.py,
    line 24). x: (N, C, ...) float; returns the same shape and dtype."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if act:
        x = F.leaky_relu(x, 0.2) * SQRT2
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate (weights scaled at run time).

    Weights N(0, 1) / `lr_multiplier`, used times `lr_multiplier` / √in_features; bias initialised
    to `bias_init`, used times `lr_multiplier`; optional `bias_act` activation (NVlabs/stylegan3
    training/networks_stylegan2.py, `FullyConnectedLayer`, lines 94-110). Input (N, in_features),
    output (N, out_features), in the input's dtype.
    """

    def __init__(self, in_features, out_features, bias=True, bias_init=0.0, lr_multiplier=1.0, activation=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x):
        """(N, in_features) → (N, out_features)."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        return bias_act(F.linear(x, w), b, self.activation)


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate, optional FIR-filtered 2× downsampling.

    Square `kernel_size`, 'same' padding; weights N(0, 1) used times 1 / √(in · k²); with `down`
    the input is blurred with the [1, 3, 3, 1] filter and convolved with stride 2 (NVlabs'
    `Conv2dLayer`, training/networks_stylegan2.py lines 133-188). After the bias and optional
    activation the output is multiplied by `gain` (√0.5 in the residual blocks) and clamped to
    ±`clamp` when given. Input (N, in, H, W); output (N, out, H, W), or (N, out, H/2, W/2) with `down`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation=False, down=False,
                 gain=1.0, clamp=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.activation, self.down, self.gain, self.clamp = activation, down, gain, clamp
        self.kernel_size = kernel_size
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x):
        """(N, in, H, W) → (N, out, H, W), or (N, out, H/2, W/2) with `down`."""
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down:  # blur, then stride-2 convolution
            p = (self.fir.shape[0] - 2) + (self.kernel_size - 1)
            x = upfirdn2d(x, self.fir, pad=((p + 1) // 2, p // 2))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel_size // 2)
        x = bias_act(x, self.bias, self.activation)
        if self.gain != 1:
            x = x * self.gain
        return x.clamp(-self.clamp, self.clamp) if self.clamp is not None else x


def modulated_conv2d(x, weight, styles, demodulate=True, up=False, fir=None, padding=0, fused=True):
    """Per-sample modulated (and demodulated) convolution (StyleGAN2 paper, Sec. 2.2, eqs. 1-3;
    NVlabs' `modulated_conv2d`, training/networks_stylegan2.py lines 32-91).

    x: (N, in, H, W); weight: (out, in, k, k), already scaled; styles: (N, in). The weight of sample
    n is weight · styles[n], demodulated to unit L2 norm per output channel (ε = 1e-8, line 63).
    With `up`, a transposed stride-2 convolution followed by the FIR `fir` (4, 4) with gain 4 gives
    (N, out, 2H, 2W); otherwise (N, out, H', W') with `padding`. Computed in x's dtype.

    `fused`: one grouped convolution with a weight per sample (NVlabs' fused form, lines 79-91);
    False: the activations are scaled by the styles before one shared-weight convolution and by the
    demodulation coefficients after it (lines 66-77), the same result up to rounding. NVlabs trains
    StyleGAN2 with the second and samples with the first (stylegan3 train.py, `--cfg=stylegan2`:
    `fused_modconv_default = 'inference_only'`): backpropagating through a grouped convolution over
    the batch, twice for R1 and path length, is far slower, on CUDA most of all.
    """
    n, in_ch, h, w_ = x.shape
    out_ch, _, kh, kw = weight.shape
    w = weight[None] * styles[:, None, :, None, None] if demodulate or fused else None  # (n, out, in, kh, kw)
    dcoefs = torch.rsqrt(w.square().sum(dim=[2, 3, 4]) + 1e-8) if demodulate else None  # (n, out)
    if not fused:
        x = x * styles.to(x.dtype)[:, :, None, None]
        if up:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
            x = upfirdn2d(x, fir, pad=(1, 1), gain=4.0)
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=padding)
        return x * dcoefs.to(x.dtype)[:, :, None, None] if demodulate else x
    if demodulate:
        w = w * dcoefs[:, :, None, None, None]
    x = x.reshape(1, n * in_ch, h, w_)
    if up:  # transposed stride-2 convolution, then FIR blur (2H+1 -> 2H)
        w = w.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw)
        x = F.conv_transpose2d(x, w.to(x.dtype), stride=2, groups=n)
        x = upfirdn2d(x, fir, pad=(1, 1), gain=4.0)
    else:
        w = w.reshape(n * out_ch, in_ch, kh, kw)
        x = F.conv2d(x, w.to(x.dtype), padding=padding, groups=n)
    return x.reshape(n, out_ch, x.shape[2], x.shape[3])
