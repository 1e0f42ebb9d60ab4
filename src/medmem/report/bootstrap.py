"""Bootstrap confidence intervals of the summary's means: over synthetic samples and over training subjects.

The summary's memorization figures are means of one number per synthetic image: `corr_mean` of its
highest correlation r, `share_above_holdout_p99` of the indicator r >= the held-out 99th percentile.
Two sources of variation, two 95 % percentile intervals (Efron & Tibshirani 1993, ch. 13), each from
`RESAMPLES` = 1000 resamples drawn with numpy's PCG64 from the fixed `SEED`, so a rerun gives the same
interval:

- **over samples**: the synthetic images resampled with replacement. The uncertainty of having drawn
  finitely many images from the generator; it shrinks as more images are sampled.
- **over training subjects** (a cluster bootstrap, Davison & Hinkley 1997, sec. 3.8): each synthetic
  image belongs to the training subject of its best match (the memorization table's `subject`); the
  subjects that occur are resampled with replacement and every image of a drawn subject comes along
  (a subject drawn twice counts twice); the statistic is the mean over the images so gathered (a ratio
  estimator: the number of images varies between resamples). Subjects are the unit of privacy (a
  patient consents, or is re-identified, as a whole), and the slices of one subject are not
  independent: a generator that memorized one patient copies many of that patient's slices at once,
  so treating those images as independent draws understates how much the share depends on which
  patients happened to be in the training set. The cluster interval answers "would this figure
  hold with other patients?"; it does not shrink with more samples, only with more subjects. Images
  without a matched subject (none when r is finite) are each their own cluster. Fewer than 2
  subjects: no interval (NaN); with few subjects (the embedded data has 8) it is rough and usually
  too narrow (a percentile interval from 8 clusters cannot reach outside what 8 subjects show).

Both are reported, side by side (columns `<stat>_lo_samples`, `<stat>_hi_samples`,
`<stat>_lo_subjects`, `<stat>_hi_subjects`), rather than one two-stage interval (subjects, then samples
within them): resampling at both stages counts the within-subject variation twice and overstates the
variance (Davison & Hinkley 1997, sec. 3.8), while the cluster bootstrap alone already carries the
variation of the images within each subject (each drawn subject brings its own images, whose mean
varies). So the subjects interval is the one to read for a privacy judgement; the samples interval
says whether more synthetic images would sharpen the figure.

Both hold the threshold (the held-out 99th percentile) fixed: the uncertainty of that percentile,
estimated from the held-out images, is not in these intervals.

The sample bootstrap is the cluster bootstrap with every image its own cluster: the same random
draws give the same resamples (`resampled_means` with distinct clusters).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RESAMPLES = 1000  # bootstrap resamples per interval
LEVEL = 0.95  # coverage of the percentile intervals
SEED = 0  # numpy Generator (PCG64) seed: the same interval on every run
_CHUNK = 1 << 22  # resample counts held at once (resamples × clusters), ~32 MB of float64


def cluster_codes(clusters) -> np.ndarray:
    """(n,) int64 codes 0..G−1 of `clusters` (n labels, any hashable; None/NaN: each its own cluster),
    numbered in order of first appearance."""
    codes, uniques = pd.factorize(pd.Series(list(clusters), dtype=object), use_na_sentinel=True)
    codes = np.asarray(codes, np.int64).copy()
    missing = codes < 0
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return codes


def resampled_means(values: np.ndarray, clusters: np.ndarray, resamples: int = RESAMPLES,
                    seed: int = SEED) -> np.ndarray:
    """(resamples, k) float64 means of `values` over cluster-bootstrap resamples.

    values: (n,) or (n, k) finite floats, one row per image; clusters: (n,) int codes 0..G−1
    (`cluster_codes`; every code used). Resample b draws G cluster codes with replacement,
    `rng.integers(0, G, G)` of `np.random.default_rng(seed)` in resample order, and takes the mean of
    `values` over every image of every drawn cluster (with multiplicity). With G = n distinct
    clusters this is the ordinary bootstrap over images. Raises ValueError for no images or
    mismatched lengths.
    """
    x = np.asarray(values, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    codes = np.asarray(clusters, np.int64)
    if len(x) == 0 or len(codes) != len(x):
        raise ValueError(f"need one cluster per image and at least one image, got {len(x)} images and "
                         f"{len(codes)} clusters")
    g = int(codes.max()) + 1
    sums = np.zeros((g, x.shape[1]))
    np.add.at(sums, codes, x)
    sizes = np.bincount(codes, minlength=g).astype(np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, x.shape[1]))
    step = max(1, _CHUNK // g)
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        drawn = rng.integers(0, g, (b, g))  # the same stream as b calls of size g
        counts = np.bincount((np.arange(b)[:, None] * g + drawn).ravel(), minlength=b * g).reshape(b, g)
        out[start:start + b] = (counts @ sums) / (counts @ sizes)[:, None]
    return out


def percentile_interval(stats: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): the (1 − level)/2 and (1 + level)/2 quantiles of `stats` (resamples, k) along axis 0
    (numpy's linear interpolation), each (k,)."""
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail], axis=0)
    return lo, hi


def mean_intervals(values: np.ndarray, subjects, resamples: int = RESAMPLES, seed: int = SEED,
                   level: float = LEVEL) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"samples": (lo, hi), "subjects": (lo, hi)}: percentile intervals of the column means of
    `values` ((n,) or (n, k) finite floats, one row per synthetic image), over images and over the
    clusters `subjects` ((n,) labels: the training subject of each image's best match; None: its own
    cluster); lo, hi are (k,) float64. No images: NaN for both; fewer than 2 distinct subjects: NaN for
    "subjects" (one subject has no between-subject variation to resample)."""
    x = np.asarray(values, np.float64)
    k = 1 if x.ndim == 1 else x.shape[1]
    nan = (np.full(k, np.nan), np.full(k, np.nan))
    if len(x) == 0:
        return {"samples": nan, "subjects": nan}
    out = {"samples": percentile_interval(resampled_means(x, np.arange(len(x)), resamples, seed), level)}
    codes = cluster_codes(subjects)
    out["subjects"] = (percentile_interval(resampled_means(x, codes, resamples, seed), level)
                       if codes.max() >= 1 else nan)
    return out
