"""FID, KID and IS from Inception features (plain functions on arrays).

FID in float64 with a symmetric square root (eigh), which stays real and accurate where the
product Σ1Σ2 is ill-conditioned (few images, 2048 features); KID and IS are torch-fidelity's own
estimators, so the numbers match its `calculate_metrics` on the same features.
"""

from __future__ import annotations

import numpy as np
import torch


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of (N, d) features in float64: mean (d,) and unbiased covariance (d, d) (N − 1 in the
    denominator, as torch-fidelity 0.4.0 `metric_fid.py` line 21 `fid_features_to_statistics`).
    N >= 2 for a finite covariance."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½: a float >= 0 (up to rounding).

    mu1, mu2: (d,) means; sigma1, sigma2: (d, d) covariances (`statistics`). Negative eigenvalues from
    rounding are clipped to 0 (the square roots stay real).
    """
    root = _sqrt_psd(sigma1)
    inner = root @ sigma2 @ root
    values = np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(values).sum())


def kid(features_1: np.ndarray, features_2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 2020) -> tuple[float, float, int]:
    """torch-fidelity's unbiased polynomial-kernel MMD² over random subsets: (mean, std, subset size).

    features_1, features_2: (N1, d), (N2, d) float32 Inception pool features. Kernel (x·y/d + 1)³,
    `subsets` = 100 subsets of min(subset_size, N1, N2) = 1000 images, seed 2020: torch-fidelity 0.4.0
    `defaults.py` lines 20-25 and 56, `metric_kid.py` lines 64-69.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(features_1), len(features_2))
    out = kid_features_to_metric(torch.from_numpy(features_1), torch.from_numpy(features_2), kid_subsets=subsets,
                                 kid_subset_size=size, rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD], size


def inception_score(logits: np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """torch-fidelity's Inception Score of (N, 1008) float32 unbiased logits: (mean, std) over `splits`
    shuffled splits (default 10, seed 2020: torch-fidelity 0.4.0 `metric_isc.py` line 16), a float
    >= 1 each. Each split needs at least one image (N >= splits), else the result is NaN.
    """
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=True, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]
