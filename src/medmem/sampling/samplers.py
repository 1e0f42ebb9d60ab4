"""The study's diffusion process and the samplers that run it backwards, as diffusers schedulers.

guided-diffusion's linear schedule for T steps scales DDPM's 1e-4..0.02 at 1,000 steps by 1000/T:
at T = 4,000 that is β from 2.5e-5 to 5e-3. ε-prediction, fixed large variance (σ²_t = β_t; at
t = 0 no noise is added, so guided-diffusion's substitution of the posterior variance there changes
nothing), x0 clipped to [-1, 1] at every step.

Beyond the study, for small images: v-prediction on the schedule rescaled to zero terminal SNR (Lin
et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1; diffusers'
`rescale_zero_terminal_snr`). An ε-predicting UNet must copy the per-image mean of its input's noise
to its output, which GroupNorm after every block makes hard to learn; at 32² that mean is 8 times
larger, relative to the image's, than at the study's 256², and sampling from pure noise then gives
mid-grey images (README, "The study in miniature"). v-prediction at zero terminal SNR asks the
network for the data's mean instead, and starts sampling exactly where training ended.

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
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

SAMPLERS = ("ancestral", "ddim", "dpm-solver++")
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction"}  # medmem's name: diffusers' prediction_type


def schedule_config(timesteps: int = 4000, beta_start: float | None = None, beta_end: float | None = None,
                    prediction: str = "epsilon", zero_terminal_snr: bool = False) -> dict:
    """The stored description of a linear β schedule: {"timesteps": T, "beta_start": β_1, "beta_end": β_T},
    plus {"prediction": "v", "zero_terminal_snr": True} where they are not the study's (absent: ε and
    the plain linear schedule, so networks and samples of the study's settings are recorded as before).

    The end points default to guided-diffusion's linear schedule, 1e-4 and 0.02 at 1,000 steps
    scaled by 1000 / T (guided_diffusion/gaussian_diffusion.py, `get_named_beta_schedule`, lines 30-32).
    `prediction`: what the network predicts, "epsilon" (the study's) or "v" (√ᾱ_t ε − √(1 − ᾱ_t) x0);
    `zero_terminal_snr`: rescale √ᾱ_t linearly so that ᾱ_T = 0 (Lin et al. 2024, Algorithm 1), which
    needs "v" (at ᾱ_T = 0 no x0 follows from ε). Raises ValueError for T < 1, end points outside
    0 < β_1 ≤ β_T < 1 (at β = 1 the signal is gone, ᾱ = 0, and the samplers divide by it), an unknown
    prediction, or zero terminal SNR with ε-prediction.
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
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose from {', '.join(PREDICTIONS)}")
    if zero_terminal_snr and prediction == "epsilon":
        raise ValueError("zero terminal SNR needs prediction v: at ᾱ_T = 0 no x0 follows from a predicted ε "
                         "(Lin et al. 2024)")
    if prediction != "epsilon":
        schedule["prediction"] = prediction
    if zero_terminal_snr:
        schedule["zero_terminal_snr"] = True
    return schedule


def prediction_target(schedule: dict, x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The network's training target for clean images `x0` noised with `noise` at ᾱ_t
    `alphas_cumprod` (broadcastable, e.g. (B, 1, 1, 1)): ε itself, or v = √ᾱ_t ε − √(1 − ᾱ_t) x0
    (Salimans & Ho 2022, eq. 9 with α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t); diffusers' `get_velocity`)."""
    if schedule.get("prediction", "epsilon") == "epsilon":
        return noise
    return alphas_cumprod.sqrt() * noise - (1 - alphas_cumprod).sqrt() * x0


def _common(schedule: dict) -> dict:
    return dict(num_train_timesteps=schedule["timesteps"], beta_start=schedule["beta_start"],
                beta_end=schedule["beta_end"], beta_schedule="linear",
                prediction_type=PREDICTIONS[schedule.get("prediction", "epsilon")],
                rescale_betas_zero_snr=bool(schedule.get("zero_terminal_snr", False)))


def _in_float64(scheduler):
    """diffusers keeps the schedule in float32, where β_t recomputed from ᾱ_t / ᾱ_{t−1} (as its
    variance does) is off by 7e-4 relative at β = 2.5e-5. Coefficients in float64 fix that; the
    images stay float32. At zero terminal SNR DPM-Solver++ keeps diffusers' ᾱ_T = 2⁻²⁴ (its
    log-SNR would be infinite at 0)."""
    c = scheduler.config
    betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float64)
    if c.rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    scheduler.betas = betas
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if c.rescale_betas_zero_snr and hasattr(scheduler, "lambda_t"):
        scheduler.alphas_cumprod[-1] = 2**-24
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
    self._predict_eps_from_xstart(x, t, out["pred_xstart"])`). The schedule's "prediction" (ε or v)
    and "zero_terminal_snr" carry over to every sampler.
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
    """float64 β, ᾱ and the DDPM posterior variance from the formulas (for tests and records); with
    "zero_terminal_snr", √ᾱ_t shifted and scaled to run from √ᾱ_1 to exactly 0 (Lin et al. 2024,
    Algorithm 1)."""
    betas = np.linspace(schedule["beta_start"], schedule["beta_end"], schedule["timesteps"], dtype=np.float64)
    alphas_cumprod = np.cumprod(1 - betas)
    if schedule.get("zero_terminal_snr"):
        root = np.sqrt(alphas_cumprod)
        root = (root - root[-1]) * root[0] / (root[0] - root[-1])
        alphas_cumprod = root**2
        betas = 1 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
    previous = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
    return {"betas": betas, "alphas_cumprod": alphas_cumprod, "posterior_variance": posterior_variance,
            "fixed_large_variance": np.append(posterior_variance[1], betas[1:])}
