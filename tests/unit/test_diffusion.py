"""The study's diffusion model: network size, schedule, sampler steps, exact resume, sampling."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run_medmem, train_and_kill_at_first_checkpoint, write_blob_dataset
from diffusers.models.attention_processor import Attention

from medmem.images import to_uint8_truncated as to_uint8
from medmem.models import count_parameters
from medmem.models.unet import attention_levels, build_unet, unet_config
from medmem.sampling.diffusion import denoise
from medmem.sampling.samplers import (prediction_target, reference_schedule, sampler, schedule_config,
                                      training_scheduler)
from medmem.training.diffusion import DiffusionTask
from medmem.training.distributed import Context

TINY = ["--base", "16", "--layers", "1", "--mults", "1", "2", "--attention", "8", "--heads", "2",
        "--timesteps", "50", "--batch", "4", "--no-progress"]


def test_the_study_network_exactly_41_125_637_parameters_zero_output_attention_at_16_and_8():
    net = build_unet(unet_config(5, 256))
    assert count_parameters(net) == 41_125_637  # guided-diffusion's UNetModel with the authors' flags
    # attention at the 16×16 and 8×8 feature maps (levels 4 and 5 of six), and in the middle block
    assert attention_levels(net) == {"down": [16, 8], "up": [8, 16], "mid": [8]}
    attention = [m for m in net.modules() if isinstance(m, Attention)]
    assert len(attention) == 2 * 3 + 2 * 4 + 1  # 3 per down level, 4 per up level, the middle block's
    assert all(m.heads == 4 and m.group_norm is not None for m in attention)
    assert net.mid_block.attentions[0].group_norm.weight.numel() == 256
    x = torch.randn(1, 5, 256, 256)
    with torch.no_grad():
        out = net(x, torch.tensor([10])).sample
    assert out.shape == (1, 5, 256, 256) and torch.count_nonzero(out) == 0  # zero-initialised output layers


def test_attention_placement_follows_the_feature_map_sizes():
    net = build_unet(unet_config(1, 32, base=16, layers=1, mults=(1, 2, 2), attention_resolutions=(16,), heads=2))
    assert attention_levels(net) == {"down": [16], "up": [16], "mid": [8]}
    assert [type(b).__name__ for b in net.down_blocks] == ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"]
    with pytest.raises(ValueError, match=r"attention resolution\(s\) \[4\] are not feature-map sizes"):
        unet_config(1, 32, mults=(1, 2, 2), attention_resolutions=(4,))


def test_the_timestep_embedding_stays_float32_under_autocast():
    net = build_unet(unet_config(1, 16, base=16, layers=1, mults=(1, 2), attention_resolutions=(8,), heads=2))
    seen = []
    net.time_embedding.linear_2.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    net.down_blocks[0].resnets[0].time_emb_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(1, 1, 16, 16), torch.tensor([3]))
    assert seen[:2] == [torch.float32, torch.bfloat16]  # the MLP in float32, the blocks under autocast


def test_a_copy_of_the_network_runs_its_own_timestep_embedding():
    """The EMA network is a deepcopy: its timestep MLP must be its own, not the raw network's."""
    import copy

    net = build_unet(unet_config(1, 16, base=8, layers=1, mults=(1, 2), attention_resolutions=(8,), heads=2))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)  # the zero-initialised layers would hide the embedding
        copied = copy.deepcopy(net)
        x, t = torch.randn(1, 1, 16, 16), torch.tensor([3])
        assert torch.equal(net(x, t).sample, copied(x, t).sample)
        for p in copied.time_embedding.parameters():
            p.zero_()
        assert not torch.equal(net(x, t).sample, copied(x, t).sample)


def test_attention_is_split_into_the_configured_heads():
    """One attention layer against a hand-written 4-head attention over the same weights."""
    torch.manual_seed(0)
    net = build_unet(unet_config(3, 32, base=32, layers=1, mults=(1, 2), attention_resolutions=(16,), heads=4))
    attn = next(m for m in net.modules() if isinstance(m, Attention))
    torch.nn.init.normal_(attn.to_out[0].weight, std=0.1)  # zero at initialisation, as guided-diffusion's
    c = attn.inner_dim
    x = torch.randn(2, c, 4, 4)
    with torch.no_grad():
        got = attn(x)
        h = attn.group_norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
        split = lambda t: t.view(2, 16, 4, c // 4).transpose(1, 2)  # noqa: E731
        weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (c // 4) ** 0.5, dim=-1)
        out = (weights @ split(v)).transpose(1, 2).reshape(2, 16, c)
        out = attn.to_out[0](out).transpose(1, 2).view(2, c, 4, 4)
        expected = (out + x) / attn.rescale_output_factor
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_any_channel_count_and_size():
    net = build_unet(unet_config(1, 32, base=16, layers=1, mults=(1, 2, 2), attention_resolutions=(8,), heads=2))
    assert net(torch.randn(2, 1, 32, 32), torch.tensor([0, 7])).sample.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="not divisible"):
        unet_config(1, 36, mults=(1, 2, 2, 2))


def test_schedule_matches_the_formulas_of_the_study():
    schedule = schedule_config(4000)
    assert schedule["beta_start"] == pytest.approx(2.5e-5) and schedule["beta_end"] == pytest.approx(5e-3)
    scheduler = training_scheduler(schedule)
    betas = np.linspace(2.5e-5, 5e-3, 4000)
    alphas_cumprod = np.cumprod(1 - betas)
    np.testing.assert_allclose(scheduler.betas.double().numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(scheduler.alphas_cumprod.double().numpy(), alphas_cumprod, rtol=1e-5)
    # fixed large variance: σ²_t = β_t (guided-diffusion's FIXED_LARGE for every t ≥ 1)
    for t in (1, 7, 1999, 3999):
        assert float(scheduler._get_variance(t)) == pytest.approx(betas[t], rel=1e-5)
    # the DDPM posterior variance β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), which the small-variance option uses
    small = training_scheduler(schedule)
    small.register_to_config(variance_type="fixed_small")
    for t in (1, 100, 3999):
        expected = betas[t] * (1 - alphas_cumprod[t - 1]) / (1 - alphas_cumprod[t])
        assert float(small._get_variance(t)) == pytest.approx(expected, rel=1e-4)


def test_a_schedule_whose_beta_reaches_one_is_refused():
    # guided-diffusion's end point 0.02 · 1000 / T: 0.999… at T = 21, exactly 1 at T = 20 (ᾱ_T = 0)
    assert schedule_config(21)["beta_end"] == pytest.approx(0.02 * 1000 / 21)
    with pytest.raises(ValueError, match="beta_end < 1"):
        schedule_config(20)
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        schedule_config(100, beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="at least 1"):
        schedule_config(0)


def test_the_studys_schedule_records_no_prediction_keys_and_bad_combinations_are_refused():
    # absent keys mean the study's ε and plain linear schedule: networks and samples record as before
    assert set(schedule_config(1000)) == {"timesteps", "beta_start", "beta_end"}
    assert schedule_config(1000, prediction="v", zero_terminal_snr=True) == {
        "timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "prediction": "v", "zero_terminal_snr": True}
    with pytest.raises(ValueError, match="zero terminal SNR needs prediction v"):
        schedule_config(1000, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="unknown prediction 'x0'"):
        schedule_config(1000, prediction="x0")


def test_zero_terminal_snr_rescales_the_root_of_alpha_bar_linearly_to_exactly_zero():
    """Lin et al. 2024, Algorithm 1, against numbers worked out here: √ᾱ_t shifted by √ᾱ_T and
    scaled by √ᾱ_1 / (√ᾱ_1 − √ᾱ_T), so ᾱ_1 keeps its value and ᾱ_T becomes 0."""
    schedule = schedule_config(1000, prediction="v", zero_terminal_snr=True)
    plain = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    r, r1, rT = np.sqrt(plain), np.sqrt(plain[0]), np.sqrt(plain[-1])
    assert rT == pytest.approx(0.00635, abs=1e-5)  # the plain schedule's terminal √ᾱ: SNR 4e-5, not 0
    expected = ((r - rT) * r1 / (r1 - rT)) ** 2
    np.testing.assert_allclose(reference_schedule(schedule)["alphas_cumprod"], expected, rtol=1e-12)
    for name in ("ancestral", "ddim"):
        abar = sampler(schedule, name, 10).alphas_cumprod
        assert abar.dtype == torch.float64
        np.testing.assert_allclose(abar.numpy(), expected, rtol=1e-9, atol=1e-15)
        assert float(abar[-1]) == 0.0 and float(abar[0]) == pytest.approx(1 - 1e-4, rel=1e-12)
    dpm = sampler(schedule, "dpm-solver++", 10).alphas_cumprod  # diffusers' finite log-SNR at t = T
    assert float(dpm[-1]) == 2**-24
    np.testing.assert_allclose(dpm[:-1].numpy(), expected[:-1], rtol=1e-9)


def test_v_target_by_hand_and_x0_recovered_from_it():
    x0 = torch.tensor([[-1.0, 0.5]]).view(1, 1, 1, 2)
    noise = torch.tensor([[0.3, -2.0]]).view(1, 1, 1, 2)
    a = torch.tensor(0.36).view(1, 1, 1, 1)  # √ᾱ = 0.6, √(1 − ᾱ) = 0.8
    v = prediction_target(schedule_config(100, prediction="v"), x0, noise, a)
    torch.testing.assert_close(v.flatten(), torch.tensor([0.6 * 0.3 + 0.8 * 1.0, 0.6 * -2.0 - 0.8 * 0.5]))
    x_t = 0.6 * x0 + 0.8 * noise
    torch.testing.assert_close(0.6 * x_t - 0.8 * v, x0)  # x0 = √ᾱ x_t − √(1 − ᾱ) v
    assert prediction_target(schedule_config(100), x0, noise, a) is noise


@pytest.mark.parametrize("prediction, zero_snr", [("epsilon", False), ("v", False), ("v", True)])
def test_the_first_training_loss_is_the_mean_square_of_the_target(prediction, zero_snr):
    """The network's output is exactly 0 at initialisation (guided-diffusion's zeroed output layers),
    so the first loss is the mean of target² over the step's draws, replayed here from the same
    generator: t, then the noise."""
    schedule = schedule_config(50, prediction=prediction, zero_terminal_snr=zero_snr)
    unet = unet_config(2, 8, base=16, layers=1, mults=(1, 2), attention_resolutions=(4,), heads=2)
    task = DiffusionTask(unet, schedule, Context(), batch=4)
    reals = torch.rand(4, 2, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    loss = task.step(reals, 0, torch.Generator().manual_seed(9))["loss"]
    gen = torch.Generator().manual_seed(9)
    t = torch.randint(0, 50, (4,), generator=gen)
    noise = torch.randn(4, 2, 8, 8, generator=gen).double()
    abar = torch.from_numpy(reference_schedule(schedule)["alphas_cumprod"])[t].view(-1, 1, 1, 1)
    target = noise if prediction == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * reals.double()
    assert loss == pytest.approx(float((target**2).mean()), rel=1e-5)


def test_one_ancestral_step_by_hand():
    """x0 from ε, clipped; posterior mean; plus √β_t · z with z from the image's own generator."""
    schedule = schedule_config(100)
    scheduler = sampler(schedule, "ancestral")
    betas = np.linspace(schedule["beta_start"], schedule["beta_end"], 100)
    abar = np.cumprod(1 - betas)
    t = 60
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64).float() * 3
    eps = torch.randn(1, 1, 4, 4)
    out = scheduler.step(eps, torch.tensor(t), x, generator=[torch.Generator().manual_seed(3)]).prev_sample
    x0 = ((x.double() - np.sqrt(1 - abar[t]) * eps.double()) / np.sqrt(abar[t])).clamp(-1, 1)
    mean = (np.sqrt(abar[t - 1]) * betas[t] / (1 - abar[t])) * x0 + \
           (np.sqrt(1 - betas[t]) * (1 - abar[t - 1]) / (1 - abar[t])) * x.double()
    z = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3)).double()
    torch.testing.assert_close(out.double(), mean + np.sqrt(betas[t]) * z, rtol=1e-4, atol=1e-4)


def _first_step_by_hand(schedule, scheduler, x, eps, clipped_eps):
    """x0 = clip((x − √(1−ᾱ_t) ε) / √ᾱ_t); x_prev = √ᾱ_prev x0 + √(1−ᾱ_prev) ε, with ε the network's
    or, `clipped_eps`, re-derived from the clipped x0 (guided-diffusion's ddim_sample,
    gaussian_diffusion.py: `eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])`)."""
    abar = np.cumprod(1 - np.linspace(schedule["beta_start"], schedule["beta_end"], schedule["timesteps"]))
    t, t_prev = int(scheduler.timesteps[0]), int(scheduler.timesteps[1])
    x, eps = x.double(), eps.double()
    x0 = ((x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])).clamp(-1, 1)
    if clipped_eps:
        eps = (x - np.sqrt(abar[t]) * x0) / np.sqrt(1 - abar[t])
    return np.sqrt(abar[t_prev]) * x0 + np.sqrt(1 - abar[t_prev]) * eps


def test_ddim_keeps_the_networks_eps_and_dpm_solver_carries_the_clipped_x0():
    """Where x0 is clipped the two samplers part: medmem's "ddim" (diffusers) moves along the network's
    ε; "dpm-solver++" (data prediction; its first step is first order) moves along the ε of the clipped
    x0, as guided-diffusion's DDIM does. This is why, on a short-trained network, DPM-Solver++ greys the
    MRI background (which sits at the clip boundary, -1) more than "ddim" (config/miniature.yaml)."""
    schedule = schedule_config(100)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 1.5
    outs = {}
    for name in ("ddim", "dpm-solver++"):
        scheduler = sampler(schedule, name, 10)
        outs[name] = scheduler.step(eps, scheduler.timesteps[0], x).prev_sample.double()
    abar_t = sampler(schedule, "ddim", 10).alphas_cumprod[99]  # the first of the trailing timesteps
    assert ((x - (1 - abar_t).sqrt() * eps).abs() > abar_t.sqrt()).any()  # some x0 are clipped
    by_hand = {c: _first_step_by_hand(schedule, sampler(schedule, "ddim", 10), x, eps, c) for c in (False, True)}
    torch.testing.assert_close(outs["ddim"], by_hand[False], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs["dpm-solver++"], by_hand[True], rtol=1e-4, atol=1e-4)
    assert (outs["ddim"] - outs["dpm-solver++"]).abs().max() > 0.1


class Oracle(torch.nn.Module):
    """The exact predictor for data that is one image x*: ε = (x_t − √ᾱ_t x*) / √(1 − ᾱ_t), or with
    `prediction` "v", v = (√ᾱ_t x_t − x*) / √(1 − ᾱ_t)."""

    def __init__(self, target, alphas_cumprod, prediction="epsilon"):
        super().__init__()
        self.target, self.abar, self.prediction = target, alphas_cumprod, prediction

    def forward(self, x, t):
        a = self.abar[t.long()].float().view(-1, 1, 1, 1) if t.ndim else self.abar[int(t)].float()
        if self.prediction == "v":
            out = (a.sqrt() * x - self.target) / (1 - a).sqrt()
        else:
            out = (x - a.sqrt() * self.target) / (1 - a).sqrt()
        return type("Out", (), {"sample": out})()


@pytest.mark.parametrize("name, steps", [("ancestral", None), ("ddim", 20), ("dpm-solver++", 15)])
def test_every_sampler_recovers_the_only_training_image_from_an_exact_denoiser(name, steps):
    schedule = schedule_config(200)
    target = torch.linspace(-0.9, 0.9, 2 * 8 * 8).view(1, 2, 8, 8)
    net = Oracle(target, training_scheduler(schedule).alphas_cumprod)
    generators = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    out = denoise(net, sampler(schedule, name, steps), (3, 2, 8, 8), generators, "cpu", progress=False)
    torch.testing.assert_close(out, target.expand(3, -1, -1, -1), rtol=0, atol=2e-3)
    assert len(sampler(schedule, name, steps).timesteps) == (steps or 200)


@pytest.mark.parametrize("name, steps", [("ancestral", None), ("ddim", 20), ("dpm-solver++", 15)])
def test_every_sampler_recovers_the_only_training_image_from_an_exact_v_denoiser_at_zero_terminal_snr(name, steps):
    """Sampling starts at ᾱ_T = 0 (pure noise, where an ε-predictor gives no x0) and still ends on the
    data; the image is dark, as MRI background is, which the miniature's ε-networks could not reach."""
    schedule = schedule_config(200, prediction="v", zero_terminal_snr=True)
    target = torch.linspace(-1.0, -0.5, 2 * 8 * 8).view(1, 2, 8, 8)
    net = Oracle(target, torch.from_numpy(reference_schedule(schedule)["alphas_cumprod"]), prediction="v")
    generators = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    scheduler = sampler(schedule, name, steps)
    assert int(scheduler.timesteps[0]) == 199  # the first step is at t = T, pure noise
    out = denoise(net, scheduler, (3, 2, 8, 8), generators, "cpu", progress=False)
    torch.testing.assert_close(out, target.expand(3, -1, -1, -1), rtol=0, atol=2e-3)


def test_output_conversion_is_the_studys():
    x = torch.tensor([-2.0, -1.0, -0.999, 0.0, 0.999, 1.0, 3.0])
    assert to_uint8(x).tolist() == [0, 0, 0, 127, 254, 255, 255]  # clamp((x + 1)·127.5), truncated


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("diffusion"))


def _state(path, key="weights"):
    return torch.load(path, weights_only=False)[key]


def test_resume_after_a_kill_gives_the_same_weights_bit_for_bit(tiny_data):
    data = tiny_data / "data"
    common = ["train", "diffusion", data]
    args = ["--kimg", "0.4", "--checkpoint-kimg", "0.02", "--snapshot-kimg", "1", "--log-kimg", "0.04",
            "--snapshot-steps", "3", *TINY]
    code, _, err = run_medmem(*common, tiny_data / "straight", *args)
    assert code == 0, err
    killed = tiny_data / "killed"
    train_and_kill_at_first_checkpoint([*common, *args], killed, poll=0.02)
    assert 0 < torch.load(killed / "checkpoint.pt", weights_only=False)["nimg"] < 400
    code, _, err = run_medmem(*common, killed, *args)
    assert code == 0 and "resumed from" in err, err
    for key in ("weights", "raw_weights"):
        a, b = _state(tiny_data / "straight" / "network.pt", key), _state(killed / "network.pt", key)
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (key, name)
    a, b = _state(tiny_data / "straight" / "network.pt", "weights"), _state(tiny_data / "straight" / "network.pt",
                                                                             "raw_weights")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # EMA and raw weights are both kept
    log = (tiny_data / "straight" / "log.csv").read_text().splitlines()
    assert len(log) == 1 + 10 and log[0].startswith("kimg,step,loss")


def test_data_parallel_on_two_processes_equals_one_process(tiny_data):
    data = tiny_data / "data"
    args = ["--kimg", "0.024", "--checkpoint-kimg", "1", "--snapshot-kimg", "1", "--log-kimg", "0.008",
            "--snapshot-steps", "3", "--device", "cpu", *TINY]
    code, _, err = run_medmem("train", "diffusion", data, tiny_data / "single", *args)
    assert code == 0, err
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           "29519", "-m", "medmem.cli", "train", "diffusion", str(data), str(tiny_data / "ddp"),
                           *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    curves = [pd.read_csv(tiny_data / run / "log.csv") for run in ("single", "ddp")]
    np.testing.assert_allclose(curves[1]["loss"], curves[0]["loss"], rtol=1e-6)  # the same minibatches, t and ε
    a, b = _state(tiny_data / "single" / "network.pt"), _state(tiny_data / "ddp" / "network.pt")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)
    # Raw weights: Adam moves a weight whose gradient is ~0 by ±lr on the sign of float rounding noise,
    # so a few of them differ by up to lr per step; all others agree to float precision.
    a, b = _state(tiny_data / "single" / "network.pt", "raw_weights"), _state(tiny_data / "ddp" / "network.pt",
                                                                              "raw_weights")
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert diff.max() <= 1e-4 * 6 and (diff > 1e-6).float().mean() < 1e-2 and diff.mean() < 1e-7


@pytest.mark.parametrize("sampler_name, steps", [("ancestral", None), ("dpm-solver++", 5)])
def test_sampling_format_record_and_batch_independence(tiny_data, sampler_name, steps):
    network = tiny_data / "straight" / "network.pt"
    if not network.exists():
        pytest.skip("needs the network of the resume test")
    out = tiny_data / "samples" / f"{sampler_name}.npy"
    extra = ["--sampler", sampler_name] + (["--steps", str(steps)] if steps else [])
    code, _, err = run_medmem("sample", network, out, "--n", 5, "--seed", 3, "--batch", 2, "--device", "cpu",
                              *extra)
    assert code == 0, err
    samples = np.load(out)
    assert samples.shape == (5, 2, 16, 16) and samples.dtype == np.uint8 and samples.std() > 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["sampler"] == sampler_name and info["steps"] == (steps or 50) and info["seeds"] == [3, 7]
    assert info["weights"] == "EMA" and info["schedule"]["timesteps"] == 50 and info["precision"] == "float32"
    assert (tiny_data / "samples" / f"{sampler_name}_preview_a.png").exists()
    again = tiny_data / "samples" / f"{sampler_name}_again.npy"
    assert run_medmem("sample", network, again, "--n", 3, "--seed", 5, "--batch", 3, "--device", "cpu",
                      *extra)[0] == 0
    np.testing.assert_array_equal(np.load(again), samples[2:5])


def test_v_prediction_at_zero_terminal_snr_from_the_command_line(tiny_data):
    """The two keys reach the network's stored schedule and the samples' record; ε with zero terminal
    SNR is refused in one line before anything is written."""
    data, out = tiny_data / "data", tiny_data / "v"
    args = ["--kimg", "0.04", "--checkpoint-kimg", "0.04", "--snapshot-kimg", "1", "--log-kimg", "0.04", *TINY]
    code, _, err = run_medmem("train", "diffusion", data, out, *args, "--prediction", "v", "--zero-terminal-snr")
    assert code == 0, err
    schedule = torch.load(out / "network.pt", weights_only=False)["schedule"]
    assert schedule["prediction"] == "v" and schedule["zero_terminal_snr"] is True
    samples = tiny_data / "v_samples" / "s.npy"
    code, _, err = run_medmem("sample", out / "network.pt", samples, "--n", 2, "--sampler", "ddim", "--steps", 3,
                              "--device", "cpu")
    assert code == 0, err
    assert json.loads(samples.with_suffix(".json").read_text())["schedule"]["prediction"] == "v"
    refused = tiny_data / "eps_zero_snr"
    code, _, err = run_medmem("train", "diffusion", data, refused, *args, "--zero-terminal-snr")
    assert code != 0 and "zero terminal SNR needs prediction v" in err
    assert len(err.strip().splitlines()) == 1 and not refused.exists()


def test_bad_sampler_steps_are_refused(tiny_data):
    network = tiny_data / "straight" / "network.pt"
    if not network.exists():
        pytest.skip("needs the network of the resume test")
    code, _, err = run_medmem("sample", network, tiny_data / "x.npy", "--n", 2, "--steps", 51)
    assert code == 2 and "--steps must be between 1 and the network's 50 timesteps" in err
    assert not (tiny_data / "x.npy").exists()


def test_weights_of_an_older_network_are_refused_with_a_clear_error():
    from medmem.errors import InputError
    from medmem.sampling.diffusion import load_unet

    cfg = unet_config(1, 16, base=16, layers=1, mults=(1, 2), attention_resolutions=(8,), heads=2)
    weights = {k: v for k, v in build_unet(cfg).state_dict().items() if "mid_block.attentions.0.group_norm" not in k}
    with pytest.raises(InputError, match="do not fit guided-diffusion's UNet.*mid_block.attentions.0.group_norm"):
        load_unet({"unet": cfg, "weights": weights}, "cpu")
