"""DP-SGD (Abadi et al. 2016) for the diffusion model through Opacus: per-sample gradients clipped to
`max_grad_norm`, Gaussian noise of standard deviation σ · max_grad_norm added to their sum, Poisson
sampling of each minibatch, and the accountant's (ε, δ) for the whole run.

The guarantee is **per training image** (adjacent datasets differ in one image), for the whole
training run: every intermediate checkpoint and the final network, raw or EMA (the EMA and sampling
are post-processing). A subject contributes many slices; group privacy bounds a subject with k
images (README, "Differential privacy").

How the pieces map onto Opacus (1.6.0, `opacus/privacy_engine.py`):

- `PrivacyEngine.make_private_with_epsilon` derives the sample rate from a DataLoader as
  1 / len(loader) (lines 573 and 440) and the steps as int(epochs / sample_rate)
  (`accountants/utils.py`, `get_noise_multiplier`, line 54): neither can express this loop's
  minibatch `batch` out of N images (q = batch / N) and its step count (⌈kimg · 1000 / batch⌉).
  `PrivateTraining` makes the same calls `make_private` makes (lines 419-463) with those exact
  values: `get_noise_multiplier(target_epsilon, target_delta, sample_rate=q, steps=...)`,
  `GradSampleModule` (per-sample gradients by hooks; Conv2d, Linear and GroupNorm, every layer of
  our UNet, have exact hooks), `DPOptimizer(expected_batch_size=batch, loss_reduction="mean")`
  and the accountant's step hook with sample rate q.
- Poisson sampling: Opacus's `UniformWithReplacementSampler` (what its `DPDataLoader` iterates),
  one minibatch per step from a generator seeded by (seed, step), so a resumed run draws the same
  minibatches; an empty minibatch still takes a noise-only step, as DP-SGD must.
- Noise: DPOptimizer's Gaussian noise from a per-step generator (deterministic for a seed, not
  cryptographically secure: Opacus's `secure_mode` needs torchcsprng; fine for a study of
  memorization, not a deployment's guarantee against an adversary who can predict the seed).
- The accountant's history (noise multiplier, sample rate, steps) is part of the checkpoint, so a
  resumed run accounts for the steps before it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from medmem.errors import InputError

# the inputs of the UNet need no gradient, so torch says its full backward hooks (Opacus's) fire on outputs only
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect "
                        "to module outputs since no inputs require gradients")
ACCOUNTANTS = ("prv", "rdp")  # Opacus's PrivacyEngine default is "prv" (privacy_engine.py, line 67)


def default_delta(n: int) -> float:
    """δ when the config leaves it null: 1 / (100 · N) for N training images, two orders of magnitude
    below 1/N. Sources: δ must be well below 1/N, else releasing one whole image at random is
    (0, δ)-DP (Dwork & Roth 2014, section 2.3); Opacus' maintainers: "orders of magnitude less than 1/N"
    (discuss.pytorch.org, "Some questions about differential privacy guarantee", 2021); TensorFlow
    Privacy's guide: "less than the inverse of the training data size"."""
    return 1.0 / (100 * n)


def dp_options(options: dict, n: int, batch: int) -> dict | None:
    """The DP-SGD settings of a diffusion block's keys `dp_epsilon`, `dp_delta`, `dp_max_grad_norm`,
    `dp_accountant` for N = `n` training images and minibatch `batch`, or None when `dp_epsilon` is
    None (off). Returns {"epsilon", "delta", "max_grad_norm", "accountant", "sample_rate"}. Raises
    InputError (one line naming the key) for ε ≤ 0, δ outside (0, 1), max_grad_norm ≤ 0, an unknown
    accountant, or a minibatch larger than the training set."""
    epsilon = options.get("dp_epsilon")
    if epsilon is None:
        return None
    delta = options.get("dp_delta")
    delta = default_delta(n) if delta is None else delta
    norm = options.get("dp_max_grad_norm", 1.0)
    accountant = options.get("dp_accountant", "prv")
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise InputError(f"config key 'dp_epsilon': must be a positive number (or null: no DP), got {epsilon}")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise InputError(f"config key 'dp_delta': must lie in (0, 1) (null: 1/(100 N)), got {delta}")
    if delta >= 1 / n:
        raise InputError(f"config key 'dp_delta': {delta:g} is not below 1/N = {1 / n:g} for N = {n} training "
                         "images (releasing one image at random would satisfy it)")
    if not (isinstance(norm, (int, float)) and math.isfinite(norm) and norm > 0):
        raise InputError(f"config key 'dp_max_grad_norm': must be a positive number, got {norm}")
    if accountant not in ACCOUNTANTS:
        raise InputError(f"config key 'dp_accountant': must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    if batch > n:
        raise InputError(f"config key 'batch': {batch} exceeds the {n} training images (DP-SGD samples each "
                         "image with probability batch / N)")
    return {"epsilon": float(epsilon), "delta": float(delta), "max_grad_norm": float(norm), "accountant": accountant,
            "sample_rate": batch / n}


def training_steps(kimg: float, batch: int) -> int:
    """The optimiser steps of `medmem.training.loop.train` for a budget of `kimg` with minibatch
    `batch`: ⌈round(kimg · 1000) / batch⌉ (the loop adds `batch` images per step until the budget)."""
    return math.ceil(int(round(kimg * 1000)) / batch)


class PrivateTraining:
    """Opacus's DP-SGD around `net` and `optimizer` (see the module docstring).

    `n`: training images; `batch`: expected minibatch (q = batch / n); `steps`: the run's optimiser
    steps (`training_steps`); `dp`: `dp_options`'s dict. After construction, train with `self.model`
    (a GradSampleModule sharing `net`'s parameters) and `self.optimizer` (a DPOptimizer over
    `optimizer`); `step_generator` must be set before each step. Raises InputError when Opacus cannot
    compute per-sample gradients of `net` or no noise multiplier reaches the target.
    """

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, n: int, batch: int, steps: int,
                 dp: dict):
        from opacus import GradSampleModule
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(net, strict=False)
        if errors:
            raise InputError(f"DP-SGD: Opacus cannot train this network privately: {errors[0]}")
        self.n, self.batch, self.steps, self.dp = n, batch, steps, dp
        self.sample_rate = dp["sample_rate"]
        try:
            with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha" on the search's far end
                warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
                self.noise_multiplier = float(get_noise_multiplier(
                    target_epsilon=dp["epsilon"], target_delta=dp["delta"], sample_rate=self.sample_rate,
                    steps=steps, accountant=dp["accountant"]))
        except ValueError as exc:
            raise InputError(f"config key 'dp_epsilon': {exc}") from None
        self.model = GradSampleModule(net, batch_first=True, loss_reduction="mean")
        self.model.forbid_grad_accumulation()  # one forward-backward per step: Poisson sampling's assumption
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=self.noise_multiplier,
                                     max_grad_norm=dp["max_grad_norm"], expected_batch_size=batch,
                                     loss_reduction="mean")
        self.accountant = create_accountant(mechanism=dp["accountant"])
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))

    def batch_indices(self, seed: int, step: int) -> np.ndarray:
        """Step `step`'s Poisson minibatch: each of the n images independently with probability q
        (Opacus's `UniformWithReplacementSampler`), from a generator seeded by (seed, step) only.
        Returns sorted int64 indices; possibly empty."""
        gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, step, 0x0D9]).integers(2**62)))
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        sampler = UniformWithReplacementSampler(num_samples=self.n, sample_rate=self.sample_rate, generator=gen,
                                                steps=1)
        return np.asarray(next(iter(sampler)), dtype=np.int64)

    def set_noise_generator(self, gen: torch.Generator, device: torch.device) -> None:
        """The step's noise comes from a generator on `device` seeded from `gen` (the step's)."""
        noise = torch.Generator(device=device)
        noise.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
        self.optimizer.generator = noise

    def empty_step(self) -> None:
        """The step of an empty Poisson minibatch: no gradient, only the noise (and the accountant's step)."""
        for p in self.optimizer.params:
            p.grad_sample = p.new_zeros((0, *p.shape))
        self.optimizer.step()

    def steps_taken(self) -> int:
        """Steps the accountant has seen (its history merges runs of equal steps into one entry)."""
        return sum(int(k) for _, _, k in self.accountant.history)

    def spent(self) -> float:
        """The accountant's ε at δ for the steps taken so far (0 before the first)."""
        if len(self.accountant) == 0:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.dp["delta"]))

    def record(self) -> dict:
        """Plain values for the network's metadata: the guarantee and how it was reached."""
        return {"epsilon": self.spent(), "delta": self.dp["delta"], "target_epsilon": self.dp["epsilon"],
                "unit": "training image", "accountant": self.dp["accountant"],
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.dp["max_grad_norm"],
                "sample_rate": self.sample_rate, "steps_planned": self.steps, "steps_taken": self.steps_taken(),
                "library": f"opacus {_opacus_version()}"}


class AccountantState:
    """The accountant as a checkpointable part (`state_dict` / `load_state_dict` of plain values)."""

    def __init__(self, accountant):
        self.accountant = accountant

    def state_dict(self) -> dict:
        """{"mechanism": "prv"|"rdp", "history": [[noise_multiplier, sample_rate, steps], ...]}"""
        return {"mechanism": self.accountant.mechanism(),
                "history": [[float(s), float(q), int(k)] for s, q, k in self.accountant.history]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the history (InputError for another mechanism's)."""
        if state.get("mechanism") != self.accountant.mechanism():
            raise InputError(f"checkpoint: accountant {state.get('mechanism')!r}, not {self.accountant.mechanism()!r}")
        self.accountant.history = [(float(s), float(q), int(k)) for s, q, k in state["history"]]


def _opacus_version() -> str:
    import opacus

    return opacus.__version__
