"""medmem's StyleGAN2 training phases against NVlabs' `StyleGAN2Loss` (stylegan3 at c233a919,
training/loss.py, the code the study ran): the same weights and inputs give the same gradient in each
of the four phases (G main, path length, D main, R1) with NVlabs' gains (1, 4, 1, 16). Reference
numbers from tests/reference/stylegan2_nvlabs.py."""

import json

import pytest
from reference.stylegan2_nvlabs import (
    OUTPUTS, _nvlabs_discriminator_name, _nvlabs_generator_name, gradient_summary, medmem_training_step,
)


@pytest.fixture(scope="module")
def phases():
    return json.loads(OUTPUTS.read_text())["training_gradients"], medmem_training_step()[0]


@pytest.mark.parametrize("phase", ["Gmain", "Greg", "Dmain", "Dreg"])
def test_each_phase_gradient_equals_nvlabs(phases, phase):
    reference, ours = phases
    rename = _nvlabs_generator_name if phase.startswith("G") else _nvlabs_discriminator_name
    expected = {rename(name): numbers for name, numbers in reference[phase].items()}
    got = {name: gradient_summary(grad) for name, grad in ours[phase].items() if grad.abs().sum() > 0}
    expected = {name: numbers for name, numbers in expected.items() if numbers[1] > 0}
    assert sorted(got) == sorted(expected)
    for name, numbers in expected.items():
        scale = max(1e-3, numbers[1])
        assert got[name] == pytest.approx(numbers, abs=1e-4 * scale, rel=1e-4), (phase, name)
