"""Both generators' training tasks satisfy the loop's `TrainingTask` protocol, by member and by signature."""

import inspect

import pytest
import torch

from medmem.models.unet import unet_config
from medmem.sampling.samplers import schedule_config
from medmem.training.diffusion import DiffusionTask
from medmem.training.distributed import Context
from medmem.training.loop import TrainingTask
from medmem.training.stylegan2 import StyleGAN2Task

METHODS = ("state", "step", "snapshot", "export")


def _stylegan2():
    common = dict(resolution=16, img_channels=2, channel_base=256, channel_max=16)
    return StyleGAN2Task(dict(common, z_dim=16, w_dim=16, mapping_layers=1), dict(common, mbstd_group=2), Context(),
                         batch=2, precision="float32")


def _diffusion():
    unet = unet_config(2, 16, base=16, layers=1, mults=(1, 2), attention_resolutions=(8,), heads=2)
    return DiffusionTask(unet, schedule_config(50), Context(), batch=2, snapshot_steps=2)


def _parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("make", [_stylegan2, _diffusion], ids=["stylegan2", "diffusion"])
def test_each_task_is_a_training_task_with_the_protocols_signatures(make):
    task = make()
    assert isinstance(task, TrainingTask)
    assert isinstance(task.name, str) and isinstance(task.settings, dict)
    for method in METHODS:
        assert _parameters(getattr(type(task), method)) == _parameters(getattr(TrainingTask, method)), method
    # and the members do what the protocol says: one step's losses, snapshot images (n, C, H, W)
    gen = torch.Generator().manual_seed(0)
    losses = task.step(torch.rand(2, 2, 16, 16) * 2 - 1, 0, gen)
    assert losses and all(isinstance(v, float) for v in losses.values())
    images = task.snapshot(gen, n=2)
    assert images.shape == (2, 2, 16, 16) and images.dtype == torch.float32
    if task.name == "diffusion":  # x0 clipped; StyleGAN2's output is not clamped
        assert images.abs().max() <= 1
    assert all(hasattr(m, "state_dict") for m in task.state().values())
    assert "weights" in task.export()


def test_an_object_without_export_is_not_a_training_task():
    class Incomplete:
        name, settings = "x", {}

        def state(self):
            return {}

        def step(self, reals, step, gen):
            return {}

        def snapshot(self, gen, n=16):
            return torch.zeros(n)

    assert not isinstance(Incomplete(), TrainingTask)
