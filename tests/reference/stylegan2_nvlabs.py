"""Outputs of NVlabs' StyleGAN2 networks (NVlabs/stylegan3 at c233a919, training/networks_stylegan2.py,
the code the study ran) for medmem's seeded weights copied across: `stylegan2_nvlabs.json`.

NVlabs' code is under a non-commercial licence, so none of it is here: `python -m
reference.stylegan2_nvlabs PATH_TO_STYLEGAN3_CHECKOUT` (from tests/) imports it from a checkout,
copies the weights of `seeded_networks()` into its `Generator` and `Discriminator` (same
settings, fp32, no clamp) and writes the numbers. tests/unit/test_stylegan2_nvlabs.py compares
medmem's networks with them. Written with torch 2.14.1 on a CPU (torch's seeded `randn` is stable
across runs of one version; the pin is what CI tests).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

import medmem.training.stylegan2 as training
from medmem.models.stylegan2 import Discriminator, Generator
from medmem.training.distributed import Context

OUTPUTS = Path(__file__).with_suffix(".json")
# small, but every part present: 2 mapping layers, 3 synthesis resolutions with different channel
# counts, 2 image channels, a residual discriminator with minibatch std over the whole batch of 4
RESOLUTION, CHANNELS, Z_DIM, CHANNEL_BASE, CHANNEL_MAX, BATCH = 16, 2, 16, 128, 16, 4


def seeded_networks() -> tuple[Generator, Discriminator]:
    """medmem's G and D from seed 0, with biases, noise strengths and w_avg moved off their
    initial values (so that each enters the output), float32 on the CPU."""
    torch.manual_seed(0)
    G = Generator(resolution=RESOLUTION, img_channels=CHANNELS, z_dim=Z_DIM, w_dim=Z_DIM, mapping_layers=2,
                  channel_base=CHANNEL_BASE, channel_max=CHANNEL_MAX)
    D = Discriminator(resolution=RESOLUTION, img_channels=CHANNELS, channel_base=CHANNEL_BASE,
                      channel_max=CHANNEL_MAX, mbstd_group=BATCH)
    with torch.no_grad():
        for p in [*G.parameters(), *D.parameters()]:
            if p.ndim <= 1:
                p.add_(0.3 * torch.randn_like(p))
        G.mapping.w_avg.normal_()
    return G, D


def seeded_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """z (BATCH, Z_DIM) and images (BATCH, CHANNELS, RESOLUTION, RESOLUTION), float32, seed 1."""
    gen = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, Z_DIM, generator=gen), torch.randn(BATCH, CHANNELS, RESOLUTION, RESOLUTION, generator=gen)


R1_GAMMA, PL_WEIGHT = 0.5, 2.0


def gradient_summary(grad: torch.Tensor) -> list[float]:
    """[sum, L2 norm, dot with a fixed N(0, 1) vector (seed 7)] of one gradient: three numbers that
    any change of the gradient moves, where the gradient itself would make the file large."""
    probe = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    g = grad.detach().double().flatten()
    return [g.sum().item(), g.norm().item(), (g @ probe).item()]


def medmem_training_step() -> tuple[dict, dict]:
    """One minibatch (step 0: all four phases) of medmem's StyleGAN2Task on the seeded networks,
    with the optimizer steps skipped so that every phase sees the same weights.

    Style mixing is off (NVlabs draws it inside its loss) and the noise strengths are 0, so that the
    per-pixel noise reaches only their gradients. Returns ({phase: {parameter name: gradient}},
    {"reals", "z" and "noise" per phase, "pl_noise"}: the inputs NVlabs is handed)."""
    G, D = seeded_networks()
    with torch.no_grad():
        for net in (G, D):
            for name, p in net.named_parameters():
                if name.endswith("noise_strength"):
                    p.zero_()
    task = training.StyleGAN2Task(G.config, D.config, Context(0, 1, torch.device("cpu")), BATCH, r1_gamma=R1_GAMMA,
                                  pl_weight=PL_WEIGHT, style_mixing=0.0, precision="float32")
    task.G.load_state_dict(G.state_dict())
    task.D.load_state_dict(D.state_dict())
    _, reals = seeded_inputs()
    reals = reals.clamp(-1, 1)
    inputs, grads, names = {"reals": reals, "z": [], "noise": []}, {}, iter(["Gmain", "Greg", "Dmain", "Dreg"])
    latents = task._latents

    def record_latents(gen, n):
        drawn = latents(gen, n)
        inputs["z"].append(drawn[0][0].clone())
        inputs["noise"].append([n.clone() for n in drawn[1]])
        return drawn

    def record_gradients(key, net, loss):
        net.zero_grad(set_to_none=True)
        loss.backward()
        grads[next(names)] = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    path_lengths = training.path_lengths

    def record_pl_noise(fake, ws, pl_noise):
        inputs["pl_noise"] = pl_noise.clone()
        return path_lengths(fake, ws, pl_noise)

    task._latents, task._optimize, training.path_lengths = record_latents, record_gradients, record_pl_noise
    try:
        task.step(reals, 0, torch.Generator().manual_seed(3))
    finally:
        training.path_lengths = path_lengths
    return grads, inputs


def _nvlabs_generator_name(name: str) -> str:
    """NVlabs' G parameter or buffer name → medmem's."""
    name = re.sub(r"^mapping\.fc(\d+)", r"mapping.layers.\1", name)
    if name == "synthesis.b4.const":
        return "synthesis.const"
    m = re.match(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(.*)", name)
    if not m:
        return name
    resolution, layer, rest = int(m[1]), m[2], m[3]
    level = resolution.bit_length() - 3  # 4 → 0, 8 → 1, …
    if layer == "torgb":
        return f"synthesis.to_images.{level}.{rest}"
    return f"synthesis.convs.{0 if resolution == 4 else 2 * level - 1 + (layer == 'conv1')}.{rest}"


def _nvlabs_discriminator_name(name: str) -> str:
    """NVlabs' D parameter name → medmem's."""
    if name.startswith(f"b{RESOLUTION}.fromrgb."):
        return name.replace(f"b{RESOLUTION}.fromrgb", "from_image")
    m = re.match(r"b(\d+)\.(conv0|conv1|skip)\.(.*)", name)
    if m:
        return f"blocks.{RESOLUTION.bit_length() - int(m[1]).bit_length()}.{m[2]}.{m[3]}"
    return re.sub(r"^b4\.", "", name)


def _nvlabs_training_gradients(nv_G, nv_D) -> dict:
    """NVlabs' StyleGAN2Loss phases (training/loss.py, lines 62-140) on the inputs medmem drew, the
    gradient of each as `gradient_summary` per NVlabs parameter name."""
    from training.loss import StyleGAN2Loss

    _, inputs = medmem_training_step()
    for net in (nv_G, nv_D):
        for name, p in net.named_parameters():
            if name.endswith("noise_strength"):
                p.data.zero_()
    nv_G.train().requires_grad_(False)
    nv_D.train().requires_grad_(False)
    loss = StyleGAN2Loss("cpu", nv_G, nv_D, r1_gamma=R1_GAMMA, style_mixing_prob=0, pl_weight=PL_WEIGHT,
                         pl_no_weight_grad=True)
    c = torch.zeros(BATCH, 0)
    pl_noise = inputs["pl_noise"]
    z_of = dict(zip(["Gmain", "Greg", "Dmain"], inputs["z"]))
    # NVlabs runs path length on the first batch // 2 latents and draws its own noise: hand it medmem's
    z_of["Greg"] = torch.cat([z_of["Greg"], z_of["Greg"]])
    z_of["Dreg"] = z_of["Dmain"]
    noise_of = dict(zip(["Gmain", "Greg", "Dmain"], inputs["noise"]))
    noise_of["Dreg"] = noise_of["Dmain"]
    randn, randn_like = torch.randn, torch.randn_like
    out = {}
    for phase, module, gain in (("Gmain", nv_G, 1), ("Greg", nv_G, 4), ("Dmain", nv_D, 1), ("Dreg", nv_D, 16)):
        module.requires_grad_(True)
        for p in module.parameters():
            p.grad = None
        noise = iter(noise_of[phase])  # NVlabs' SynthesisLayer draws torch.randn([N, 1, r, r]), conv by conv
        torch.randn = lambda *shape, **kw: next(noise).clone()
        torch.randn_like = lambda x, **kw: pl_noise * (x.shape[2] * x.shape[3]) ** 0.5
        try:
            loss.accumulate_gradients(phase, inputs["reals"], c, z_of[phase], c, gain, 0)
        finally:
            torch.randn, torch.randn_like = randn, randn_like
        module.requires_grad_(False)
        out[phase] = {n: gradient_summary(p.grad) for n, p in module.named_parameters() if p.grad is not None}
    return out


def _rounded(value):
    """Floats to 7 significant digits (float32's), recursively: the file stays small."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def write_outputs(stylegan3: Path) -> dict:
    """Build NVlabs' networks from the checkout `stylegan3`, copy the seeded weights in, write OUTPUTS."""
    sys.path.insert(0, str(stylegan3))
    from training.networks_stylegan2 import Discriminator as NVDiscriminator
    from training.networks_stylegan2 import Generator as NVGenerator

    G, D = seeded_networks()
    nv_G = NVGenerator(z_dim=Z_DIM, c_dim=0, w_dim=Z_DIM, img_resolution=RESOLUTION, img_channels=CHANNELS,
                       mapping_kwargs={"num_layers": 2}, channel_base=CHANNEL_BASE, channel_max=CHANNEL_MAX,
                       num_fp16_res=0, conv_clamp=None, fused_modconv_default="inference_only")
    nv_D = NVDiscriminator(c_dim=0, img_resolution=RESOLUTION, img_channels=CHANNELS, channel_base=CHANNEL_BASE,
                           channel_max=CHANNEL_MAX, num_fp16_res=0, conv_clamp=None, architecture="resnet",
                           epilogue_kwargs={"mbstd_group_size": BATCH})
    with torch.no_grad():
        for nv, ours, rename in ((nv_G, G.state_dict(), _nvlabs_generator_name),
                                 (nv_D, D.state_dict(), _nvlabs_discriminator_name)):
            for name, tensor in [*nv.named_parameters(), *nv.named_buffers()]:
                if not name.endswith("resample_filter"):  # the fixed [1, 3, 3, 1] filter, not a weight
                    tensor.copy_(ours[rename(name)])
    z, images = seeded_inputs()
    with torch.no_grad():
        record = {
            "source": "NVlabs/stylegan3 c233a919 training/networks_stylegan2.py, float32, CPU",
            "parameters": {"G": sum(p.numel() for p in nv_G.parameters()), "D": sum(p.numel() for p in nv_D.parameters())},
            "ws": nv_G.mapping(z, None)[:, 0].tolist(),
            "images_fused": nv_G(z, None, noise_mode="const", fused_modconv=True).tolist(),
            "images_unfused": nv_G(z, None, noise_mode="const", fused_modconv=False).tolist(),
            "images_truncated": nv_G(z, None, truncation_psi=0.7, noise_mode="const").tolist(),
            "logits": nv_D(images, None).flatten().tolist(),
        }
    images.requires_grad_(True)
    grad, = torch.autograd.grad(nv_D(images, None).sum(), images)
    record["logits_input_gradient"] = grad.tolist()
    record["training_gradients"] = _nvlabs_training_gradients(nv_G, nv_D)
    OUTPUTS.write_text(json.dumps(_rounded(record), separators=(",", ":")) + "\n")
    return record


if __name__ == "__main__":
    write_outputs(Path(sys.argv[1]))
