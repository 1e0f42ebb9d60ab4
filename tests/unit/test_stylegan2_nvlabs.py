"""medmem's StyleGAN2 against NVlabs' own networks (the code the study ran): the same weights give
the same numbers. The reference numbers were written by NVlabs/stylegan3 at c233a919
(tests/reference/stylegan2_nvlabs.py says how); a difference in any layer (styles, demodulation,
noise, FIR resampling, skip outputs, residual scaling, minibatch std, equalized learning rates)
changes them far beyond the tolerance."""

import json

import numpy as np
import pytest
import torch
from reference.stylegan2_nvlabs import OUTPUTS, seeded_inputs, seeded_networks


@pytest.fixture(scope="module")
def reference():
    return json.loads(OUTPUTS.read_text())


def assert_close(ours: torch.Tensor, theirs, what: str):
    theirs = np.asarray(theirs, dtype=np.float64)
    ours = ours.detach().double().numpy()
    assert ours.shape == theirs.shape, what
    scale = max(1.0, float(np.abs(theirs).max()))
    assert np.abs(ours - theirs).max() <= 2e-5 * scale, what  # float32 sums in another order


def test_parameter_counts_equal_nvlabs(reference):
    G, D = seeded_networks()
    assert sum(p.numel() for p in G.parameters()) == reference["parameters"]["G"]
    assert sum(p.numel() for p in D.parameters()) == reference["parameters"]["D"]


def test_generator_equals_nvlabs_fused_unfused_and_truncated(reference):
    G, _ = seeded_networks()
    z, _ = seeded_inputs()
    with torch.no_grad():
        assert_close(G.mapping(z)[:, 0], reference["ws"], "w")
        assert_close(G.eval()(z), reference["images_fused"], "sampling (fused modulated convolution)")
        assert_close(G.train()(z), reference["images_unfused"], "training (unfused modulated convolution)")
        assert_close(G.eval()(z, truncation_psi=0.7), reference["images_truncated"], "truncation ψ 0.7")


def test_discriminator_and_its_input_gradient_equal_nvlabs(reference):
    _, D = seeded_networks()
    _, images = seeded_inputs()
    images.requires_grad_(True)
    logits = D(images)
    assert_close(logits.flatten(), reference["logits"], "logits")
    grad, = torch.autograd.grad(logits.sum(), images)  # what R1 squares
    assert_close(grad, reference["logits_input_gradient"], "input gradient")
