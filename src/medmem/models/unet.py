"""The study's denoising network (guided-diffusion's `UNetModel` as the authors' flags built it) on
diffusers' `UNet2DModel`.

The authors ran guided-diffusion's `scripts/image_train.py` with `--image_size 256 --num_channels 64
--num_res_blocks 3` (muhamadusman/Assist, DiffusionModel/ReadMe.md) and otherwise its defaults
(guided_diffusion/script_util.py, `model_and_diffusion_defaults`, lines 47-62): 4 heads,
`attention_resolutions="16,8"`, scale-shift norm, dropout 0, no fp16, channel multipliers
(1, 1, 2, 2, 4, 4) for 256² (`create_model`, lines 148-152). `create_model` turns each attention
resolution r into the downsampling factor `image_size // r` (lines 162-164) and `UNetModel` adds
attention after every residual block of a level whose factor is in that list (unet.py, lines
501 and 582): attention runs at the **16×16 and 8×8 feature maps**, and always in the middle
block (line 539). `attention_resolutions` here are those feature-map sizes, as guided-diffusion's flag.

guided-diffusion's settings map one to one onto diffusers' blocks: residual blocks per level →
`layers_per_block` (the up path gets one more, in both), scale-shift norm →
`resnet_time_scale_shift="scale_shift"`, attention levels → `Attn*Block2D`. Three fix-ups make the
two identical (checked against guided-diffusion's own `UNetModel` with copied weights,
tests/test_unet_reference.py):

- diffusers fixes the *width* of an attention head, guided-diffusion the *number* of heads (4):
  `set_heads` re-splits every attention layer (the weights do not change);
- diffusers' middle-block attention has no GroupNorm when `resnet_time_scale_shift="scale_shift"`
  (unet_2d_blocks.py, `UNetMidBlock2D`: `attn_groups = resnet_groups if resnet_time_scale_shift ==
  "default" else None`), guided-diffusion's `AttentionBlock` always has one (unet.py, line 285):
  `attn_norm_num_groups` restores it (2 × channels parameters: 512 at the study's 256 channels);
- guided-diffusion zero-initialises every ResBlock's second convolution (unet.py, line 210), every
  attention output projection (line 294) and the final convolution (line 615), so the network's
  output is exactly 0 at initialisation: `zero_output_layers` does the same.

At 256² with 5 channels in and out this is 41,125,637 parameters (the study reports 41.1 M).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding
from diffusers.models.resnet import ResnetBlock2D
from medmem import precision

STUDY_PARAMETERS = 41_125_637  # unet_config(5, 256): guided-diffusion's UNetModel with the authors' flags


def unet_config(channels: int, size: int, base: int = 64, layers: int = 3, mults=(1, 1, 2, 2, 4, 4),
                attention_resolutions=(16, 8), heads: int = 4, dropout: float = 0.0) -> dict:
    """Everything needed to rebuild the network (stored with checkpoints and exported networks).

    Defaults are the study's (guided-diffusion with `--num_channels 64 --num_res_blocks 3` at 256²).
    `attention_resolutions`: feature-map sizes (pixels per side) with self-attention, as
    guided-diffusion's `--attention_resolutions`; each must be one of the network's feature-map sizes
    `size // 2**level`. Raises ValueError for a size the levels cannot divide, base channels that do
    not split into GroupNorm groups, or an attention resolution the network does not have.
    """
    mults = tuple(int(m) for m in mults)
    if size % 2 ** (len(mults) - 1):
        raise ValueError(f"image size {size} is not divisible by 2^{len(mults) - 1} ({len(mults)} levels)")
    if base % 32 and base % 8:
        raise ValueError(f"base channels {base} do not split into GroupNorm groups")
    attention = tuple(int(r) for r in attention_resolutions)
    feature_sizes = [size // 2**i for i in range(len(mults))]
    missing = [r for r in attention if r not in feature_sizes]
    if missing:
        raise ValueError(f"attention resolution(s) {missing} are not feature-map sizes of this network "
                         f"({', '.join(map(str, feature_sizes))} at {size}² with {len(mults)} levels)")
    return {"channels": int(channels), "size": int(size), "base": int(base), "layers": int(layers), "mults": mults,
            "attention_resolutions": attention, "heads": int(heads), "dropout": float(dropout)}


def build_unet(config: dict) -> UNet2DModel:
    """guided-diffusion's `UNetModel` for `config` (see `unet_config`), output exactly 0 at init.

    Input: x (N, channels, size, size) float, timesteps (N,) integers in [0, T); output `.sample`
    of the same shape as x (the predicted ε).
    """
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
        attn_norm_num_groups=groups,  # the middle block's attention keeps its GroupNorm, as guided-diffusion's
        dropout=config["dropout"],
        add_attention=True,
    )
    set_heads(unet, config["heads"])
    zero_output_layers(unet)
    keep_time_embedding_float32(unet)
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


@torch.no_grad()
def zero_output_layers(model: UNet2DModel) -> None:
    """guided-diffusion's `zero_module` on the layers it applies it to: each ResBlock's second
    convolution, each attention output projection and the final convolution (weights and biases)."""
    layers = [m.conv2 for m in model.modules() if isinstance(m, ResnetBlock2D)]
    layers += [m.to_out[0] for m in model.modules() if isinstance(m, Attention)]
    layers.append(model.conv_out)
    for layer in layers:
        for p in layer.parameters():
            p.zero_()


def keep_time_embedding_float32(model: UNet2DModel) -> None:
    """Run the timestep MLP in float32 even under autocast, as guided-diffusion's fp16 mode keeps
    `time_embed` in float32 (unet.py, `convert_to_fp16` converts only the input, middle and output
    blocks, lines 618-624). Changes nothing in float32; the state dict is unchanged. Done by the
    module's class, so a `copy.deepcopy` of the model (the EMA network) runs its own weights."""
    embedding = model.time_embedding
    if type(embedding) is not TimestepEmbedding:
        raise TypeError(f"expected diffusers' TimestepEmbedding, got {type(embedding).__name__}")
    embedding.__class__ = Float32TimestepEmbedding


class Float32TimestepEmbedding(TimestepEmbedding):
    """diffusers' TimestepEmbedding run in float32 under any autocast (`keep_time_embedding_float32`)."""

    def forward(self, sample, *args, **kwargs):
        """As TimestepEmbedding's, on `sample` cast to float32 with autocast off on its device."""
        with precision.float32(sample.device):
            return super().forward(sample.float(), *args, **kwargs)


def attention_levels(model: UNet2DModel) -> dict[str, list[int]]:
    """Feature-map sizes of the levels with attention, per path: {"down": [...], "up": [...],
    "mid": [...]}, for a model built by `build_unet` (size from its config)."""
    size = model.config.sample_size
    out = {"down": [], "up": [], "mid": []}
    n = len(model.down_blocks)
    for i, block in enumerate(model.down_blocks):
        if getattr(block, "attentions", None):
            out["down"].append(size // 2**i)
    for i, block in enumerate(model.up_blocks):
        if getattr(block, "attentions", None):
            out["up"].append(size // 2 ** (n - 1 - i))
    if model.mid_block.attentions[0] is not None:
        out["mid"].append(size // 2 ** (n - 1))
    return out

