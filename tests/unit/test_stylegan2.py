"""StyleGAN2: the study's network sizes, exact resume, data parallel = single process, sampling."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run_medmem, train_and_kill_at_first_checkpoint, write_blob_dataset

from medmem.images import to_uint8_rounded as to_uint8
from medmem.models.layers import downsample2d, fir_filter, modulated_conv2d, upfirdn2d, upsample2d
from medmem.models import count_parameters
from medmem.models.stylegan2 import Discriminator, Generator
from medmem.training.distributed import Context
from medmem.training.stylegan2 import StyleGAN2Task, augment

TINY = ["--channel-base", "256", "--channel-max", "32", "--mapping-layers", "2", "--z-dim", "32",
        "--batch", "8", "--no-progress"]


def test_parameter_counts_match_the_reference_within_2_percent():
    G, D = Generator(256, 5), Discriminator(256, 5)
    assert abs(count_parameters(G) / 30.0e6 - 1) < 0.02
    assert abs(count_parameters(D) / 28.9e6 - 1) < 0.02
    assert G.synthesis.num_ws == 14 and G.mapping.num_ws == 14


@pytest.mark.parametrize("resolution, channels", [(16, 1), (32, 5)])
def test_any_channel_count_and_power_of_two_resolution(resolution, channels):
    G = Generator(resolution, channels, z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)
    D = Discriminator(resolution, channels, channel_base=128, channel_max=16)
    img = G(torch.randn(4, 16))
    assert img.shape == (4, channels, resolution, resolution) and D(img).shape == (4, 1)


def test_fir_resampling_preserves_a_constant_image_and_its_mean():
    x = torch.ones(1, 1, 8, 8)
    up, down = upsample2d(x, fir_filter()), downsample2d(x, fir_filter())
    assert up.shape[-1] == 16 and down.shape[-1] == 4
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))


def test_r1_double_backward_through_augmentation_matches_finite_differences():
    torch.manual_seed(0)
    D = Discriminator(16, 1, channel_base=64, channel_max=8).double()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    flip, shift = torch.tensor([True, False]), torch.tensor([[1, -2], [0, 1]])
    grad, = torch.autograd.grad(D(augment(x, flip, shift)).sum(), x, create_graph=True)
    penalty = grad.square().sum()
    penalty.backward()  # must not raise: no grid_sample anywhere
    w = D.out.weight
    analytic = w.grad[0, 0].item()
    eps = 1e-6
    with torch.no_grad():
        w[0, 0] += eps
    g2, = torch.autograd.grad(D(augment(x, flip, shift)).sum(), x)
    with torch.no_grad():
        w[0, 0] -= 2 * eps
    g1, = torch.autograd.grad(D(augment(x, flip, shift)).sum(), x)
    numeric = (g2.square().sum() - g1.square().sum()).item() / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_augment_flips_and_shifts_with_zero_fill():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = augment(x, torch.tensor([False]), torch.tensor([[1, 0]]))
    torch.testing.assert_close(out[0, 0, 1:], x[0, 0, :3])
    assert (out[0, 0, 0] == 0).all()
    torch.testing.assert_close(augment(x, torch.tensor([True]), torch.tensor([[0, 0]])), x.flip(3))


def test_output_conversion_is_the_studys():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 255]  # clamp(x·127.5 + 128), truncated


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("sg"))


def _weights(path):
    network = torch.load(path, weights_only=False)
    return network["weights"]


def test_resume_after_a_kill_gives_the_same_weights_bit_for_bit(tiny_data):
    data = tiny_data / "data"
    common = ["train", "stylegan2", data]
    args = ["--kimg", "0.096", "--checkpoint-kimg", "0.032", "--snapshot-kimg", "1", "--log-kimg", "0.016", *TINY]
    code, _, err = run_medmem(*common, tiny_data / "straight", *args)
    assert code == 0, err
    # the same run, killed once its first checkpoint exists, then started again
    killed = tiny_data / "killed"
    train_and_kill_at_first_checkpoint([*common, *args], killed, poll=0.05)
    first = torch.load(killed / "checkpoint.pt", weights_only=False)
    assert 0 < first["nimg"] < 96
    code, _, err = run_medmem(*common, killed, *args)
    assert code == 0, err
    assert "resumed from" in err
    a, b = _weights(tiny_data / "straight" / "network.pt"), _weights(killed / "network.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = (killed / "log.csv").read_text().splitlines()
    assert len(log) == 1 + 6 and "images_per_s" in log[0]


def test_data_parallel_on_two_processes_equals_one_process(tiny_data):
    data = tiny_data / "data"
    args = ["--kimg", "0.032", "--checkpoint-kimg", "1", "--snapshot-kimg", "1", "--log-kimg", "0.016",
            "--device", "cpu", *TINY]
    code, _, err = run_medmem("train", "stylegan2", data, tiny_data / "single", *args)
    assert code == 0, err
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           "29517", "-m", "medmem.cli", "train", "stylegan2", str(data), str(tiny_data / "ddp"),
                           *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(tiny_data / "single" / "network.pt"), _weights(tiny_data / "ddp" / "network.pt")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    moved = sum(not torch.equal(a[k], torch.load(tiny_data / "single" / "checkpoint.pt", weights_only=False)
                                ["state"]["G_ema"][k]) for k in a)
    assert moved == 0  # network.pt holds the final EMA generator


def test_sampling_format_and_determinism(tiny_data):
    network = tiny_data / "single" / "network.pt"
    if not network.exists():
        pytest.skip("needs the network of the data-parallel test")
    out = tiny_data / "samples" / "stylegan2.npy"
    code, _, err = run_medmem("sample", network, out, "--n", 10, "--seed", 5, "--batch", 4, "--device", "cpu",
                              "--channel-names", "a", "b")
    assert code == 0, err
    samples = np.load(out, mmap_mode="r")
    assert samples.shape == (10, 2, 16, 16) and samples.dtype == np.uint8
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["truncation_psi"] == 1.0 and info["noise_mode"] == "const" and info["seeds"] == [5, 14]
    assert info["precision"] == "float32"
    assert info["kimg"] == torch.load(network, weights_only=False)["kimg"]  # the report marks it on the curve
    assert (tiny_data / "samples" / "stylegan2_preview_a.png").exists()
    # image i depends only on seed + i, not on the batch it was drawn in
    again = tiny_data / "samples" / "again.npy"
    assert run_medmem("sample", network, again, "--n", 4, "--seed", 11, "--batch", 3, "--device", "cpu")[0] == 0
    np.testing.assert_array_equal(np.load(again), samples[6:10])


# --- the details of NVlabs' --cfg=stylegan2 (NVlabs/stylegan3, the code the study ran) ---

def _tiny_task(**kwargs):
    from medmem.training.distributed import Context
    from medmem.training.stylegan2 import StyleGAN2Task

    torch.manual_seed(0)
    g = dict(resolution=16, img_channels=2, channel_base=64, channel_max=16)
    return StyleGAN2Task(dict(g, z_dim=16, w_dim=16, mapping_layers=2), g, Context(), batch=4, **kwargs)


def test_latent_of_a_seed_is_nvlabs_randomstate_draw():
    from medmem.sampling.stylegan2 import seed_latents

    seeds = [2, 3, 100001]
    z = seed_latents(seeds, 512)
    assert z.dtype == torch.float32 and z.shape == (3, 512)
    for row, s in zip(z, seeds):  # gen_images.py: torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
        expected = torch.from_numpy(np.random.RandomState(s).randn(1, 512)).to(torch.float32)[0]
        assert torch.equal(row, expected)


def test_w_avg_moves_with_beta_0_998_in_the_discriminator_pass_only():
    from medmem.training.loop import step_generator

    task = _tiny_task(pl_weight=2.0, r1_gamma=1.0)
    mapping = task.G.mapping
    assert mapping.w_avg_beta == 0.998
    calls = []
    original = task._generate

    def spy(latents, noise, update_w_avg=False):
        before = mapping.w_avg.clone()
        out = original(latents, noise, update_w_avg)
        with torch.no_grad():
            w = mapping(latents[0])[:, 0]  # the same z through the same (unchanged) mapping
        calls.append((update_w_avg, before, mapping.w_avg.clone(), w.mean(0)))
        return out

    task._generate = spy
    task.step(torch.rand(4, 2, 16, 16) * 2 - 1, 0, step_generator(0, 0))  # step 0: G main, G reg, D main, D reg
    assert [c[0] for c in calls] == [False, False, True]  # G main, path length, D main
    for update, before, after, batch_mean in calls:
        if update:
            torch.testing.assert_close(after, batch_mean + 0.998 * (before - batch_mean))
        else:
            assert torch.equal(after, before)


def test_ema_ramps_up_over_the_first_5_percent_of_images_by_default():
    task = _tiny_task()
    assert task.ema_rampup == 0.05 and task.ema_kimg == 4 * 10 / 32
    p = next(task.G.parameters())
    with torch.no_grad():
        p.add_(1.0)
    before = next(task.G_ema.parameters()).clone()
    task._update_ema(4, 0)  # the first minibatch: NVlabs' cur_nimg 0 gives β = 0, G_ema = G
    assert torch.equal(next(task.G_ema.parameters()), p)
    with torch.no_grad():
        p.add_(1.0)
    task._update_ema(4, 800)  # ema_nimg = min(125, 800 × 0.05 = 40): β = 0.5^(4/40)
    beta = 0.5 ** (4 / 40)
    torch.testing.assert_close(next(task.G_ema.parameters()), p - 1 + (1 - beta) * 1.0)
    assert not torch.equal(before, p)


def test_non_finite_gradients_are_zeroed_or_clamped_as_nvlabs_does():
    from medmem.training.stylegan2 import sanitize_gradients

    p = torch.nn.Parameter(torch.zeros(5))
    p.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.0, -3.0])
    sanitize_gradients([p])
    assert p.grad.tolist() == [0.0, 1e5, -1e5, 2.0, -3.0]


def test_a_nan_gradient_never_reaches_the_weights():
    from medmem.training.loop import step_generator

    task = _tiny_task(pl_weight=0.0, r1_gamma=0.0)
    d_weight = task.D.out.weight
    d_weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    before = d_weight.detach().clone()
    task.step(torch.rand(4, 2, 16, 16) * 2 - 1, 1, step_generator(0, 1))
    assert torch.isfinite(d_weight).all() and torch.equal(d_weight.detach(), before)  # a zero gradient: no move


def _r1_gradients(D, reals, under_autocast: bool, float32_pass: bool):
    """The weights' gradient of the R1 loss, computed as the task does (float32_pass) or as it did
    before (D under autocast), with CPU bf16 autocast around everything when under_autocast."""
    from contextlib import nullcontext

    from medmem import precision
    from medmem.training.stylegan2 import r1_penalty

    D.zero_grad(set_to_none=True)
    outer = torch.autocast("cpu", dtype=torch.bfloat16) if under_autocast else nullcontext()
    real = reals.detach().requires_grad_(True)
    with outer:
        with precision.float32("cpu") if float32_pass else nullcontext():
            logits = D(real)
            penalty = r1_penalty(logits, real)
    penalty.mean().backward()
    return torch.cat([p.grad.flatten() for p in D.parameters() if p.grad is not None])


def test_r1_gradient_under_autocast_is_within_1_percent_of_float32():
    torch.manual_seed(0)
    D = Discriminator(16, 2, channel_base=128, channel_max=32)
    reals = torch.rand(4, 2, 16, 16) * 2 - 1
    reference = _r1_gradients(D, reals, under_autocast=False, float32_pass=True)
    ours = _r1_gradients(D, reals, under_autocast=True, float32_pass=True)
    error = lambda g: float((g - reference).norm() / reference.norm())  # noqa: E731
    assert error(ours) < 0.01
    # the old path (D under bf16 autocast) fails this
    assert error(_r1_gradients(D, reals, under_autocast=True, float32_pass=False)) > 0.01


def test_path_length_gradient_computes_no_parameter_gradient_and_matches_finite_differences():
    from medmem.training.stylegan2 import path_lengths

    torch.manual_seed(0)
    G = Generator(8, 1, z_dim=8, w_dim=8, mapping_layers=1, channel_base=32, channel_max=4).double()
    fired = []
    for name, p in G.named_parameters():
        p.register_hook(lambda g, name=name: fired.append(name))
    z = torch.randn(2, 8, dtype=torch.float64)
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64) / 8

    def penalty():
        ws = G.mapping(z)
        return path_lengths(G.synthesis(ws), ws, y).square().sum()

    value = penalty()
    assert fired == []  # pl_no_weight_grad: the gradient w.r.t. ws touched no parameter
    value.backward()
    weight = G.synthesis.convs[-1].weight
    analytic = weight.grad[0, 0, 1, 1].item()
    eps = 1e-6
    with torch.no_grad():
        weight[0, 0, 1, 1] += eps
    plus = penalty().item()
    with torch.no_grad():
        weight[0, 0, 1, 1] -= 2 * eps
    minus = penalty().item()
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)  # the penalty's weight gradient is complete


def test_precision_names_and_the_cpu_fallback():
    from medmem.precision import autocast, effective_precision

    assert effective_precision("float32", "cpu") == "float32"
    assert effective_precision("bf16", "cpu") == "float32"  # bf16 products are ~500x slower on this CPU
    assert effective_precision("bf16", "cuda") == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        effective_precision("fp8", "cpu")
    with autocast("bf16", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    task = _tiny_task(precision="bf16")
    assert task.settings["precision"] == "float32" and task.ema_rampup == 0.05



def _modulated_conv_by_hand(x, weight, styles, demodulate, up, fir):
    """One sample at a time: the sample's own modulated (and demodulated) weight, a plain convolution."""
    out = []
    for n in range(x.shape[0]):
        w = weight * styles[n][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        if up:
            y = torch.nn.functional.conv_transpose2d(x[n:n + 1], w.transpose(0, 1), stride=2)
            out.append(upfirdn2d(y, fir, pad=(1, 1), gain=4.0))
        else:
            out.append(torch.nn.functional.conv2d(x[n:n + 1], w, padding=1))
    return torch.cat(out)


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_fused_and_unfused_agree_with_a_per_sample_convolution(up, demodulate):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    styles = (torch.randn(3, 4, generator=gen, dtype=torch.float64) + 1).requires_grad_()
    fir = fir_filter().double()
    expected = _modulated_conv_by_hand(x, weight, styles, demodulate, up, fir)
    grads_expected = torch.autograd.grad(expected.square().sum(), (x, weight, styles))
    for fused in (True, False):
        got = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, fir=fir, padding=1, fused=fused)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
        for g, e in zip(torch.autograd.grad(got.square().sum(), (x, weight, styles)), grads_expected):
            torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)


def test_the_generator_trains_unfused_and_samples_fused_as_nvlabs(monkeypatch):
    import medmem.models.stylegan2 as stylegan2

    seen = []
    real = stylegan2.modulated_conv2d
    monkeypatch.setattr(stylegan2, "modulated_conv2d", lambda *a, **k: seen.append(k["fused"]) or real(*a, **k))
    G = Generator(resolution=8, img_channels=1, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64,
                  channel_max=8)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    train = G.train()(z)
    assert seen and not any(seen)
    seen.clear()
    sample = G.eval()(z)
    assert seen and all(seen)
    torch.testing.assert_close(train, sample, rtol=1e-5, atol=1e-5)


def test_style_mixing_draws_one_coin_and_one_cutoff_per_minibatch_as_nvlabs():
    """NVlabs' run_G (training/loss.py, lines 45-49) mixes the whole minibatch or none of it, at one
    cutoff layer drawn from 1 … num_ws − 1, with probability style_mixing_prob."""
    ctx = Context(0, 1, torch.device("cpu"))
    task = StyleGAN2Task(dict(resolution=8, img_channels=1, z_dim=8, w_dim=8, mapping_layers=1, channel_base=32,
                              channel_max=8), dict(resolution=8, img_channels=1, channel_base=32, channel_max=8),
                         ctx, batch=8, style_mixing=0.9)
    mixed, cutoffs = 0, set()
    for step in range(400):
        (_, _, mix, cutoff), _ = task._latents(torch.Generator().manual_seed(step), 8)
        assert mix.shape == cutoff.shape == (8,)
        assert len(set(mix.tolist())) == 1 and len(set(cutoff.tolist())) == 1
        mixed += bool(mix[0])
        cutoffs.add(int(cutoff[0]))
    assert 0.85 < mixed / 400 < 0.95  # binomial sd 0.015
    assert cutoffs == set(range(1, task.G.synthesis.num_ws))
