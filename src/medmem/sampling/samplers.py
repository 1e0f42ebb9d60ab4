"""The study's diffusion process and the samplers that run it backwards, as diffusers schedulers.

guided-diffusion's linear schedule for T steps scales DDPM's 1e-4..0.02 at 1,000 steps by 1000/T:
at T = 4,000 that is β from 2.5e-5 to 5e-3. ε-prediction, fixed large variance (σ²_t = β_t; at
t = 0 no noise is added, so guided-diffusion's substitution of the posterior variance there changes
nothing), x0 clipped to [-1, 1] at every step.

The schedule lives here, beside the samplers, not in `medmem.models`: it is not part of the network
(the UNet only sees integer timesteps), and both the training forward process
(`training_scheduler`) and every sampler are diffusers schedulers built from it with the same
float64 fix-up, so one module holds all of it. The schedule dict (`schedule_config`) is stored in
network.pt under "schedule".
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

SAMPLERS = ("ancestral", "ddim", "dpm-solver++")


def schedule_config(timesteps: int = 4000, beta_start: float | None = None, beta_end: float | None = None) -> dict:
    """The stored description of a linear β schedule: {"timesteps": T, "beta_start": β_1, "beta_end": β_T}.

    The end points default to guided-diffusion's linear schedule, 1e-4 and 0.02 at 1,000 steps
    scaled by 1000 / T (guided_diffusion/gaussian_diffusion.py, `get_named_beta_schedule`, lines 30-32).
    Raises ValueError for T < 1 or end points outside 0 < β_1 ≤ β_T < 1 (at β = 1 the signal is
    gone, ᾱ = 0, and the samplers divide by it).
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    scale = 1000 / timesteps
    schedule = {"timesteps": int(timesteps), "beta_start": float(beta_start if beta_start is not None else 1e-4 * scale),
                "beta_end": float(beta_end if beta_end is not None else 0.02 * scale)}
    if not 0 < schedule["beta_start"] <= schedule["beta_end"] < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {schedule['beta_start']:g} and "
                         f"{schedule['beta_end']:g} (guided-diffusion's default end point 0.02 · 1000 / T reaches 1 "
                         f"at T = 20; use at least 21 timesteps or set beta_end)")
    return schedule


def _common(schedule: dict) -> dict:
    return dict(num_train_timesteps=schedule["timesteps"], beta_start=schedule["beta_start"],
                beta_end=schedule["beta_end"], beta_schedule="linear", prediction_type="epsilon")


def _in_float64(scheduler):
    """diffusers keeps the schedule in float32, where β_t recomputed from ᾱ_t / ᾱ_{t−1} (as its
    variance does) is off by 7e-4 relative at β = 2.5e-5. Coefficients in float64 fix that; the
    images stay float32."""
    c = scheduler.config
    betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float64)
    scheduler.betas = betas
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(scheduler, "lambda_t"):
        scheduler.alpha_t = scheduler.alphas_cumprod.sqrt()
        scheduler.sigma_t = (1 - scheduler.alphas_cumprod).sqrt()
        scheduler.lambda_t = scheduler.alpha_t.log() - scheduler.sigma_t.log()
    return scheduler


def training_scheduler(schedule: dict) -> DDPMScheduler:
    """The study's DDPM process for `schedule` (see `schedule_config`): ε-prediction, fixed large
    variance, x0 clipped to [-1, 1], coefficients (`betas`, `alphas_cumprod`) in float64. Used for
    the forward noising in training and as the `ancestral` sampler."""
    return _in_float64(DDPMScheduler(**_common(schedule), variance_type="fixed_large", clip_sample=True,
                                     clip_sample_range=1.0))


def sampler(schedule: dict, name: str, steps: int | None = None):
    """A diffusers scheduler for `schedule` with its timesteps set (`steps`, default every one of the
    schedule's T steps; spacing "trailing" for the fast solvers), coefficients in float64.

    `name`: "ancestral" (the study's DDPM sampler, `training_scheduler`), "ddim" (η = 0,
    deterministic, x0 clipped) or "dpm-solver++" (2nd-order multistep, x0 clipped by static
    thresholding at 1). Raises ValueError for any other name.

    Where x0 is clipped the two fast solvers part: "ddim" (diffusers' default) steps along the
    network's own ε, "dpm-solver++" (data prediction) along the ε of the clipped x0, as
    guided-diffusion's DDIM does (gaussian_diffusion.py, `ddim_sample`: `eps =
    self._predict_eps_from_xstart(x, t, out["pred_xstart"])`). On a short-trained network the
    clipping biases MRI background (at -1, the clip boundary) upwards, and DPM-Solver++ carries
    that bias furthest (README, "The study in miniature").
    """
    if name == "ancestral":
        scheduler = training_scheduler(schedule)
    elif name == "ddim":  # deterministic (η = 0), x0 clipped
        scheduler = DDIMScheduler(**_common(schedule), clip_sample=True, clip_sample_range=1.0,
                                  set_alpha_to_one=True, timestep_spacing="trailing")
        _in_float64(scheduler)
    elif name == "dpm-solver++":
        # Thresholding with a ceiling of 1 is static clipping of x0 to [-1, 1]; without it the solver
        # lets x0 run far outside the data range.
        scheduler = DPMSolverMultistepScheduler(**_common(schedule), algorithm_type="dpmsolver++", solver_order=2,
                                                thresholding=True, sample_max_value=1.0,
                                                timestep_spacing="trailing")
        _in_float64(scheduler)
    else:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    scheduler.set_timesteps(steps or schedule["timesteps"])
    return scheduler


def reference_schedule(schedule: dict) -> dict:
    """float64 β, ᾱ and the DDPM posterior variance from the formulas (for tests and records)."""
    betas = np.linspace(schedule["beta_start"], schedule["beta_end"], schedule["timesteps"], dtype=np.float64)
    alphas_cumprod = np.cumprod(1 - betas)
    previous = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
    return {"betas": betas, "alphas_cumprod": alphas_cumprod, "posterior_variance": posterior_variance,
            "fixed_large_variance": np.append(posterior_variance[1], betas[1:])}
