"""medmem's diffusion UNet against guided-diffusion's own `UNetModel` (vendored unchanged under
tests/reference/guided_diffusion, MIT): the same parameters one for one, and the same output once
guided-diffusion's (random) weights are copied across."""

import pytest
import torch
from reference.guided_diffusion.unet import AttentionBlock, Downsample, ResBlock, Upsample, UNetModel

from medmem.models import count_parameters
from medmem.models.unet import STUDY_PARAMETERS, build_unet, unet_config


def reference_unet(config: dict) -> UNetModel:
    """guided-diffusion's UNetModel as its `create_model` builds it from the same settings
    (attention resolution r → downsampling factor size // r, script_util.py lines 162-164)."""
    return UNetModel(image_size=config["size"], in_channels=config["channels"], model_channels=config["base"],
                     out_channels=config["channels"], num_res_blocks=config["layers"],
                     attention_resolutions=tuple(config["size"] // r for r in config["attention_resolutions"]),
                     dropout=config["dropout"], channel_mult=config["mults"], num_heads=config["heads"],
                     use_scale_shift_norm=True)


def _copy(dst, src):
    assert dst.weight.shape == src.weight.shape, (dst, src)
    dst.weight.copy_(src.weight)
    if src.bias is not None:
        dst.bias.copy_(src.bias)


def _copy_resblock(ours, ref: ResBlock):
    _copy(ours.norm1, ref.in_layers[0])
    _copy(ours.conv1, ref.in_layers[2])
    _copy(ours.time_emb_proj, ref.emb_layers[1])
    _copy(ours.norm2, ref.out_layers[0])
    _copy(ours.conv2, ref.out_layers[3])
    if isinstance(ref.skip_connection, torch.nn.Identity):
        assert ours.conv_shortcut is None
    else:
        _copy(ours.conv_shortcut, ref.skip_connection)


def _copy_attention(ours, ref: AttentionBlock):
    """guided-diffusion's legacy attention order: qkv's output channels are, per head, that head's
    q, k and v (unet.py, QKVAttentionLegacy); diffusers keeps q, k and v in separate layers."""
    _copy(ours.group_norm, ref.norm)
    c, heads = ref.channels, ref.num_heads
    ch = c // heads
    w = ref.qkv.weight.reshape(heads, 3, ch, c)
    b = ref.qkv.bias.reshape(heads, 3, ch)
    for i, layer in enumerate((ours.to_q, ours.to_k, ours.to_v)):
        layer.weight.copy_(w[:, i].reshape(c, c))
        layer.bias.copy_(b[:, i].reshape(c))
    ours.to_out[0].weight.copy_(ref.proj_out.weight[:, :, 0])
    ours.to_out[0].bias.copy_(ref.proj_out.bias)
    assert ours.heads == heads


@torch.no_grad()
def copy_reference_weights(ours, ref: UNetModel) -> None:
    """Every parameter of guided-diffusion's network into medmem's; fails on any left over."""
    _copy(ours.time_embedding.linear_1, ref.time_embed[0])
    _copy(ours.time_embedding.linear_2, ref.time_embed[2])
    _copy(ours.conv_in, ref.input_blocks[0][0])
    inputs = iter(ref.input_blocks[1:])
    for block in ours.down_blocks:
        for i, resnet in enumerate(block.resnets):
            layers = next(inputs)
            _copy_resblock(resnet, layers[0])
            if getattr(block, "attentions", None):
                _copy_attention(block.attentions[i], layers[1])
            else:
                assert len(layers) == 1
        if block.downsamplers:
            down = next(inputs)[0]
            assert isinstance(down, Downsample)
            _copy(block.downsamplers[0].conv, down.op)
    assert next(inputs, None) is None
    _copy_resblock(ours.mid_block.resnets[0], ref.middle_block[0])
    _copy_attention(ours.mid_block.attentions[0], ref.middle_block[1])
    _copy_resblock(ours.mid_block.resnets[1], ref.middle_block[2])
    outputs = iter(ref.output_blocks)
    for block in ours.up_blocks:
        for i, resnet in enumerate(block.resnets):
            layers = list(next(outputs))
            _copy_resblock(resnet, layers.pop(0))
            if getattr(block, "attentions", None):
                _copy_attention(block.attentions[i], layers.pop(0))
            if i == len(block.resnets) - 1 and block.upsamplers:
                up = layers.pop(0)
                assert isinstance(up, Upsample)
                _copy(block.upsamplers[0].conv, up.conv)
            assert not layers
    assert next(outputs, None) is None
    _copy(ours.conv_norm_out, ref.out[0])
    _copy(ours.conv_out, ref.out[2])


def test_the_study_network_has_guided_diffusions_parameters_exactly():
    config = unet_config(5, 256)
    ours, ref = build_unet(config), reference_unet(config)
    assert count_parameters(ours) == count_parameters(ref) == STUDY_PARAMETERS == 41_125_637


@pytest.mark.parametrize("config, size", [
    # a small network at its own size: attention at 16² and 8², as "16,8" asks
    (unet_config(3, 32, base=32, layers=2, mults=(1, 2, 2), attention_resolutions=(16, 8), heads=4), 32),
    # the study's network, run on a 64² input (the same weights and attention levels, 16× fewer pixels)
    (unet_config(5, 256), 64),
])
def test_the_same_outputs_as_guided_diffusion_with_copied_weights(config, size):
    torch.manual_seed(0)
    ref = reference_unet(config).eval()
    with torch.no_grad():  # guided-diffusion zero-initialises its output layers: give every weight a value
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * (0.5 / max(1, p[0].numel()) ** 0.5) + (0.05 if p.ndim == 1 else 0))
    ours = build_unet(config).eval()
    copy_reference_weights(ours, ref)
    x = torch.randn(2, config["channels"], size, size)
    t = torch.tensor([0, 3999])
    with torch.no_grad():
        expected = ref(x, t)
        got = ours(x, t).sample
    assert expected.abs().mean() > 0.1  # a non-trivial output
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_the_ancestral_sampler_follows_guided_diffusions_p_sample_loop():
    """The study's sampler (every step, x0 clipped, fixed large variance) against guided-diffusion's
    `p_sample_loop` on the same network, start and per-step noise (drawn from the same per-image
    generators), over all 100 steps of a 100-step linear schedule."""
    from reference.guided_diffusion import gaussian_diffusion as gd

    from medmem.sampling.samplers import sampler, schedule_config
    from medmem.sampling.diffusion import denoise

    T, shape, seeds = 100, (2, 3, 16, 16), (11, 12)
    torch.manual_seed(0)
    config = unet_config(3, 16, base=32, layers=1, mults=(1, 2), attention_resolutions=(8,), heads=4)
    ours = build_unet(config).eval()
    with torch.no_grad():
        for p in ours.parameters():  # a network that predicts something (not 0)
            p.add_(torch.randn_like(p) * 0.02)
    reference = gd.GaussianDiffusion(betas=gd.get_named_beta_schedule("linear", T),
                                     model_mean_type=gd.ModelMeanType.EPSILON,
                                     model_var_type=gd.ModelVarType.FIXED_LARGE, loss_type=gd.LossType.MSE,
                                     rescale_timesteps=False)

    def generators():
        return [torch.Generator().manual_seed(s) for s in seeds]

    with torch.no_grad():
        got = denoise(ours, sampler(schedule_config(T), "ancestral"), shape, generators(), "cpu", progress=False)
        gens = generators()
        start = torch.stack([torch.randn(shape[1:], generator=g) for g in gens])
        original = gd.th.randn_like
        gd.th.randn_like = lambda x: torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens])
        try:
            expected = reference.p_sample_loop(lambda x, t: ours(x, t).sample, shape, noise=start,
                                               clip_denoised=True, device=torch.device("cpu"))
        finally:
            gd.th.randn_like = original
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(got, expected.clamp(-1, 1), rtol=0, atol=5e-6)
