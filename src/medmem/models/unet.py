"""The study's denoising network (guided-diffusion's UNet as the authors configured it) built from
diffusers' `UNet2DModel`.

guided-diffusion's settings map one to one: residual blocks per level → `layers_per_block` (the
up path gets one more, in both), scale-shift norm → `resnet_time_scale_shift="scale_shift"`,
attention at given feature-map sizes → `Attn*Block2D` at those levels, plus the middle block's
attention. One difference needs a fix-up: diffusers fixes the *width* of an attention head for the
whole network, guided-diffusion the *number* of heads (4), so `set_heads` re-splits every
attention layer into that many heads. The weights do not change, only how q, k and v are split.
At 256², 5 channels this is 39.74 M parameters against the study's reported 41.1 M (−3.3 %).
"""

from __future__ import annotations

from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention


def unet_config(channels: int, size: int, base: int = 64, layers: int = 3, mults=(1, 1, 2, 2, 4, 4),
                attention_resolutions=(32, 16), heads: int = 4, dropout: float = 0.0) -> dict:
    """Everything needed to rebuild the network (stored with checkpoints and exported networks)."""
    mults = tuple(int(m) for m in mults)
    if size % 2 ** (len(mults) - 1):
        raise ValueError(f"image size {size} is not divisible by 2^{len(mults) - 1} ({len(mults)} levels)")
    if base % 32 and base % 8:
        raise ValueError(f"base channels {base} do not split into GroupNorm groups")
    return {"channels": int(channels), "size": int(size), "base": int(base), "layers": int(layers), "mults": mults,
            "attention_resolutions": tuple(int(r) for r in attention_resolutions), "heads": int(heads),
            "dropout": float(dropout)}


def build_unet(config: dict) -> UNet2DModel:
    size, mults = config["size"], config["mults"]
    feature_sizes = [size // 2**i for i in range(len(mults))]
    attention = set(config["attention_resolutions"])
    widths = tuple(config["base"] * m for m in mults)
    groups = 32 if all(w % 32 == 0 for w in widths) else 8
    unet = UNet2DModel(
        sample_size=size,
        in_channels=config["channels"],
        out_channels=config["channels"],
        block_out_channels=widths,
        layers_per_block=config["layers"],
        down_block_types=tuple("AttnDownBlock2D" if s in attention else "DownBlock2D" for s in feature_sizes),
        up_block_types=tuple("AttnUpBlock2D" if s in attention else "UpBlock2D" for s in reversed(feature_sizes)),
        resnet_time_scale_shift="scale_shift",
        attention_head_dim=widths[0],
        norm_num_groups=groups,
        dropout=config["dropout"],
        add_attention=True,
    )
    set_heads(unet, config["heads"])
    return unet


def set_heads(model, heads: int) -> None:
    """Split every attention layer into `heads` heads, whatever its width."""
    for module in model.modules():
        if isinstance(module, Attention):
            if module.inner_dim % heads:
                raise ValueError(f"attention width {module.inner_dim} does not split into {heads} heads")
            module.heads = module.sliceable_head_dim = heads
            if module.scale_qk:
                module.scale = (module.inner_dim // heads) ** -0.5


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
