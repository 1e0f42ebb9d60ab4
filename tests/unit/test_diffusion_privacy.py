"""Diffusion training beyond the study: flip/translate augmentation and DP-SGD through Opacus."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import REPO, run_medmem, write_blob_dataset

from medmem.config import validate_config
from medmem.errors import InputError
from medmem.models.unet import build_unet, unet_config
from medmem.sampling.samplers import schedule_config
from medmem.training.augment import augment, augment_params
from medmem.training.diffusion import DiffusionTask
from medmem.training.distributed import Context
from medmem.training.loop import LoopSettings, train
from medmem.training.privacy import default_delta, dp_options, training_steps
from medmem.weights import load_plain

UNET = unet_config(1, 16, base=8, layers=1, mults=(1, 2), attention_resolutions=(8,), heads=2)
SCHEDULE = schedule_config(50)


def _task(seed=0, **kwargs):
    torch.manual_seed(seed)
    return DiffusionTask(UNET, SCHEDULE, Context(), **{"batch": 4, **kwargs})


def _images(n=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 16, 16), dtype=np.uint8)


# --- augmentation ---------------------------------------------------------------------------------

def _hand_augmented(images, flips, shifts):
    """Pixel by pixel: mirror, then out[r, c] = in[r - dy, c - dx] where inside, else 0."""
    n, c, h, w = images.shape
    out = torch.zeros_like(images)
    for i in range(n):
        img = images[i].flip(-1) if flips[i] else images[i]
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        for r in range(h):
            for col in range(w):
                if 0 <= r - dy < h and 0 <= col - dx < w:
                    out[i, :, r, col] = img[:, r - dy, col - dx]
    return out


def test_augment_equals_a_hand_built_flip_and_shift():
    images = torch.randn(5, 2, 6, 7)
    flips = torch.tensor([False, True, True, False, True])
    shifts = torch.tensor([[0, 0], [0, 0], [2, -1], [-3, 2], [1, 3]])
    assert torch.equal(augment(images, flips, shifts), _hand_augmented(images, flips, shifts))
    # the draws: half the images flipped on average, shifts within ± translate, none when off
    flips, shifts = augment_params(torch.Generator().manual_seed(0), 4000, True, 2)
    assert 0.45 < flips.float().mean() < 0.55 and set(shifts.unique().tolist()) == {-2, -1, 0, 1, 2}
    flips, shifts = augment_params(torch.Generator().manual_seed(0), 50, False, 0)
    assert not flips.any() and not shifts.any()


def _reference_step(net, opt, reals, gen, timesteps, alphas_cumprod):
    """The study's ε-prediction step written out (the code path before augmentation and DP existed)."""
    t = torch.randint(0, timesteps, (len(reals),), generator=gen)
    noise = torch.randn(reals.shape, generator=gen)
    a = alphas_cumprod[t].float()[:, None, None, None]
    loss = F.mse_loss(net(a.sqrt() * reals + (1 - a).sqrt() * noise, t).sample, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def test_augmentation_and_dp_off_leave_training_bitwise_unchanged():
    task = _task(flip=False, translate=0, dp=None)
    net = copy.deepcopy(task.net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
    reals = torch.rand(4, 1, 16, 16) * 2 - 1
    for step in range(3):
        ours = task.step(reals, step, torch.Generator().manual_seed(step))["loss"]
        reference = _reference_step(net, opt, reals, torch.Generator().manual_seed(step), 50, task.alphas_cumprod)
        assert ours == reference, step
    for a, b in zip(task.net.parameters(), net.parameters()):
        assert torch.equal(a, b)
    assert "flip" not in task.settings and "dp" not in task.settings  # earlier checkpoints still resume
    assert task.batch_indices(0, 0) is None and task.log_values() == {}


def test_augmented_step_trains_on_the_flipped_and_shifted_batch():
    augmented, plain = _task(flip=True, translate=2), _task()
    reals = torch.rand(4, 1, 16, 16) * 2 - 1
    loss = augmented.step(reals, 0, torch.Generator().manual_seed(5))["loss"]
    gen = torch.Generator().manual_seed(5)
    flips = torch.rand(4, generator=gen) < 0.5  # drawn first, then t and the noise
    shifts = torch.randint(-2, 3, (4, 2), generator=gen)
    assert flips.any() and shifts.any()
    assert loss == plain.step(_hand_augmented(reals, flips, shifts), 0, gen)["loss"]
    for a, b in zip(augmented.net.parameters(), plain.net.parameters()):
        assert torch.equal(a, b)
    assert augmented.settings["flip"] is True and augmented.settings["translate"] == 2
    assert augmented.export()["training"] == {"flip": True, "translate": 2}


# --- DP-SGD ------------------------------------------------------------------------------------------

def _dp(n=20, batch=4, epsilon=8.0, **extra):
    """DP settings; the RDP accountant where the accountant does not matter (PRV's search takes seconds)."""
    return dp_options({"dp_epsilon": epsilon, "dp_accountant": "rdp", **extra}, n, batch)


def test_per_sample_gradients_are_clipped_as_dp_sgd_defines():
    """Noise off: the gradient Opacus hands AdamW is Σ_i clip(g_i) / expected batch, g_i each image's own
    gradient computed one image at a time (Abadi et al. 2016, Algorithm 1)."""
    norm = 1e-3
    task = _task(dp=_dp(dp_max_grad_norm=norm), n_train=20, steps=10)
    task.opt.noise_multiplier = 0.0
    net = build_unet(UNET)  # a plain copy (a deepcopy would carry Opacus's hooks)
    net.load_state_dict(task.net.state_dict())
    reals = torch.rand(5, 1, 16, 16) * 2 - 1  # a Poisson minibatch: 5 images where 4 are expected
    gen = torch.Generator().manual_seed(3)
    task.step(reals, 0, gen)
    gen = torch.Generator().manual_seed(3)
    t = torch.randint(0, 50, (5,), generator=gen)
    noise = torch.randn(reals.shape, generator=gen)
    a = task.alphas_cumprod[t].float()[:, None, None, None]
    noisy = a.sqrt() * reals + (1 - a).sqrt() * noise
    expected = [torch.zeros_like(p) for p in net.parameters()]
    norms = []
    for i in range(5):
        net.zero_grad()
        F.mse_loss(net(noisy[i:i + 1], t[i:i + 1]).sample, noise[i:i + 1]).backward()
        grads = [p.grad.clone() for p in net.parameters()]
        total = torch.sqrt(sum((g ** 2).sum() for g in grads))
        norms.append(float(total))
        for e, g in zip(expected, grads):
            e += g * min(1.0, norm / (float(total) + 1e-6))
    assert min(norms) > 100 * norm  # every image's gradient was clipped
    got = [p.grad for p in task.net.parameters()]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e / 4, rtol=1e-4, atol=1e-9)
    update_norm = torch.sqrt(sum((g ** 2).sum() for g in got))
    assert update_norm <= 5 * norm / 4 * (1 + 1e-4)


def test_dp_run_spends_at_most_the_target_epsilon_and_records_it(tmp_path):
    images = _images(20)
    steps = training_steps(0.04, 4)
    dp = _dp(epsilon=8.0, dp_accountant="prv")  # the default accountant
    task = _task(dp=dp, n_train=20, steps=steps)
    network = train(task, images, tmp_path, LoopSettings(kimg=0.04, batch=4, log_kimg=0.02, checkpoint_kimg=1,
                                                          snapshot_kimg=1), Context(), progress=False)
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log["step"]) == [5, 10] and steps == 10
    assert log["epsilon"].is_monotonic_increasing and 7.9 <= log["epsilon"].iloc[-1] <= 8.0
    assert (log["delta"] == 1 / 2000).all() and dp["delta"] == default_delta(20) == 1 / 2000
    privacy = load_plain(network, "network")["privacy"]
    assert privacy["epsilon"] == log["epsilon"].iloc[-1] and privacy["delta"] == 1 / 2000
    assert privacy["steps_taken"] == steps and privacy["sample_rate"] == 4 / 20
    assert privacy["unit"] == "training image" and privacy["accountant"] == "prv"
    # the same (σ, q, steps) through Opacus's other accountant: the guarantee holds there too (RDP is looser)
    from opacus.accountants import RDPAccountant

    rdp = RDPAccountant()
    rdp.history = [(privacy["noise_multiplier"], 0.2, steps)]
    assert privacy["epsilon"] <= rdp.get_epsilon(1 / 2000) < 1.5 * 8


def test_dp_minibatches_are_poisson_and_the_noise_only_step_on_an_empty_one():
    task = _task(dp=_dp(n=200, batch=20), n_train=200, steps=10)
    sizes = [len(task.batch_indices(0, step)) for step in range(300)]
    assert abs(np.mean(sizes) - 20) < 1.5 and np.std(sizes) > 2  # Binomial(200, 0.1): mean 20, sd 4.2
    assert np.array_equal(task.batch_indices(0, 7), task.batch_indices(0, 7))
    before = [p.detach().clone() for p in task.net.parameters()]
    assert task.step(torch.zeros(0, 1, 16, 16), 0, torch.Generator().manual_seed(0)) == {}
    assert any(not torch.equal(a, b) for a, b in zip(before, task.net.parameters()))  # the noise moved them
    assert task.private.steps_taken() == 1


def test_dp_resume_continues_the_accountant_bit_for_bit(tmp_path):
    images = _images(20)
    settings = LoopSettings(kimg=0.04, batch=4, log_kimg=0.02, checkpoint_kimg=1, snapshot_kimg=1)
    steps = training_steps(0.04, 4)
    straight = train(_task(dp=_dp(), n_train=20, steps=steps), images, tmp_path / "a", settings, Context(),
                     progress=False)
    assert train(_task(dp=_dp(), n_train=20, steps=steps), images, tmp_path / "b", settings, Context(),
                 progress=False, stop_kimg=0.02) is None
    resumed = train(_task(dp=_dp(), n_train=20, steps=steps), images, tmp_path / "b", settings, Context(),
                    progress=False)
    a, b = load_plain(straight, "network"), load_plain(resumed, "network")
    assert a["privacy"] == b["privacy"] and b["privacy"]["steps_taken"] == steps
    for name in a["raw_weights"]:
        assert torch.equal(a["raw_weights"][name], b["raw_weights"][name]), name
    timing = ["images_per_s", "s_per_kimg"]
    log_a, log_b = (pd.read_csv(tmp_path / run / "log.csv").drop(columns=timing) for run in "ab")
    assert log_a.equals(log_b) and list(log_a["step"]) == [5, 10]


@pytest.mark.parametrize("options, n, batch, key", [
    ({"dp_epsilon": 0}, 20, 4, "dp_epsilon"),
    ({"dp_epsilon": -1.0}, 20, 4, "dp_epsilon"),
    ({"dp_epsilon": float("inf")}, 20, 4, "dp_epsilon"),
    ({"dp_epsilon": 1.0, "dp_delta": 1.0}, 20, 4, "dp_delta"),
    ({"dp_epsilon": 1.0, "dp_delta": 0.0}, 20, 4, "dp_delta"),
    ({"dp_epsilon": 1.0, "dp_delta": 0.05}, 20, 4, "dp_delta"),  # = 1/N
    ({"dp_epsilon": 1.0, "dp_max_grad_norm": 0}, 20, 4, "dp_max_grad_norm"),
    ({"dp_epsilon": 1.0, "dp_accountant": "gdp"}, 20, 4, "dp_accountant"),
    ({"dp_epsilon": 1.0}, 20, 40, "batch"),
])
def test_bad_dp_settings_are_one_line_errors_naming_the_key(options, n, batch, key):
    with pytest.raises(InputError) as err:
        dp_options(options, n, batch)
    assert f"config key '{key}'" in str(err.value) and "\n" not in str(err.value)
    assert dp_options({"dp_epsilon": None, "dp_delta": 5.0}, n, batch) is None  # off: the rest is not read


@pytest.mark.parametrize("change, key", [
    ({"dp_epsilon": 0}, "models.diffusion.dp_epsilon"),
    ({"dp_epsilon": 1, "dp_delta": 1}, "models.diffusion.dp_delta"),
    ({"dp_accountant": "gdp"}, "models.diffusion.dp_accountant"),
    ({"translate": -1}, "models.diffusion.translate"),
])
def test_bad_dp_and_augmentation_keys_in_a_config_name_the_key(change, key):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"]["diffusion"].update(change)
    with pytest.raises(InputError) as err:
        validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", REPO)
    assert f"config key '{key}'" in str(err.value)


def test_dp_refuses_several_processes_and_bf16():
    with pytest.raises(InputError, match="one process only"):
        DiffusionTask(UNET, SCHEDULE, Context(world_size=2), batch=4, dp=_dp(), n_train=20, steps=10)
    cpu = _task(dp=_dp(), n_train=20, steps=10, precision="bf16")  # bf16 means float32 on the CPU
    assert cpu.settings["precision"] == "float32"


def test_medmem_train_with_dp_writes_epsilon_and_refuses_a_bad_one(tmp_path):
    data = write_blob_dataset(tmp_path) / "data"
    tiny = ["--base", "8", "--layers", "1", "--mults", "1", "2", "--attention", "8", "--heads", "2",
            "--timesteps", "50", "--batch", "4", "--no-progress", "--kimg", "0.02", "--log-kimg", "0.02",
            "--snapshot-kimg", "1", "--snapshot-steps", "2", "--flip", "--translate", "1"]
    code, _, err = run_medmem("train", "diffusion", data, tmp_path / "bad", *tiny, "--dp-epsilon", "0")
    assert code == 2 and err.strip().splitlines()[-1].count("dp_epsilon") == 1, err
    assert not (tmp_path / "bad" / "network.pt").exists()
    code, _, err = run_medmem("train", "diffusion", data, tmp_path / "dp", *tiny, "--dp-epsilon", "10",
                              "--dp-accountant", "rdp")
    assert code == 0, err
    network = load_plain(tmp_path / "dp" / "network.pt", "network")
    assert network["privacy"]["accountant"] == "rdp" and 0 < network["privacy"]["epsilon"] <= 10
    assert network["privacy"]["delta"] == 1 / (100 * 24) and network["training"] == {"flip": True, "translate": 1}
    assert pd.read_csv(tmp_path / "dp" / "log.csv")["epsilon"].iloc[-1] == network["privacy"]["epsilon"]
    # the samples' record carries the guarantee
    from medmem.sampling.run import load_network, run_sample

    run_sample(load_network(tmp_path / "dp" / "network.pt", "cpu"), tmp_path / "dp" / "network.pt",
               tmp_path / "samples.npy", n=2, seed=0, batch=2, sampler="ddim", steps=2, device="cpu")
    assert json.loads((tmp_path / "samples.json").read_text())["privacy"] == network["privacy"]
