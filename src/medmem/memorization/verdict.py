"""The verdict on one generator's samples in one view, and whether they can be judged at all.

A generator that has not yet learned the data (noise, blurred blobs) produces samples that resemble
*no* training image: their highest correlation with the training set sits far below what real images
of patients never seen in training reach (the held-out baseline). Such samples say nothing about
memorization, and ranking generators on them misleads (an untrained model "copies less"). The rule,
used by the summary table, the report and `medmem audit` alike (one function, `judge`):

    **cannot judge** when the samples' median highest correlation lies below the held-out images'
    5th percentile (`LOW_QUANTILE`): half the samples come less close to any training image than
    19 in 20 real unseen images do.

Why these choices (see README, "What a correlation means: calibration"):

- the *median* of the samples, not the mean: half the samples, robust to a few copies or outliers
  and easy to say;
- the held-out *5th* percentile: if the samples were drawn like real unseen images, their median
  would fall below it with probability P(Binomial(n, 0.05) ≥ n/2): 0.05 for one sample, 0.007 for
  3, 3e-6 for 10, 2e-11 for 24. On the embedded BraTS 2020 data (73 held-out images of 3 subjects,
  T1) the held-out r_max runs min 0.821, 1st percentile 0.845, 5th 0.889, median 0.936: the 1st
  percentile rests on the single lowest image (an end slice with little brain), the 5th on about
  four, so it is the lower bound a real-looking image reaches that a small holdout can still
  estimate. With fewer than 20 held-out images it lies between the two lowest (linear
  interpolation, `numpy.quantile`'s default).

Otherwise the verdict counts the samples at or above the held-out 99th percentile (about 1 % of real
unseen images reach it). A sample that reaches it is reported even when the rest cannot be judged:
an immature generator may still copy.

Beside the verdict, `concentration` asks whether the samples spread over the training set as real
unseen images do, from their nearest training images (the best matches):

    **concentrated** when the largest share of samples with one and the same nearest training image
    is at least `CONCENTRATION_MIN_SHARE` (1 in 10) and at least `CONCENTRATION_RATIO` (2) times the
    held-out images' largest share.

A collapsed generator (mode collapse) can look real and still be near a few training images only;
its shares then describe those few. On the miniature's BRATS20-like data (102 held-out slices, 194
training slices, T1) the held-out images' largest share was 0.07 (54 distinct nearest images; 0.06 to
0.11 over the four MR channels), a diffusion model's 1,000 samples' 0.03 (174 distinct), and a
StyleGAN2 that had collapsed onto one kind of slice had 0.54 (6 distinct). For samples drawn like
held-out images the largest share estimates the same largest match probability, which the held-out
images' share over-estimates at small size, so twice it is beyond chance; the floor keeps a share
among few held-out images (1 of 10 is 0.1) from flagging ordinary samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOW_QUANTILE = 0.05  # the held-out quantile the samples' median must reach to be judged
HIGH_QUANTILE = 0.99  # the held-out quantile that flags likely copies (as `calibration.holdout_p99`)

CONCENTRATION_RATIO = 2.0  # samples' largest nearest-image share over the held-out images' that flags collapse
CONCENTRATION_MIN_SHARE = 0.10  # and the least share that does

JUDGED, CANNOT_JUDGE, NO_BASELINE, NO_SAMPLES = "judged", "cannot judge", "no baseline", "no samples"
VERDICTS = (JUDGED, CANNOT_JUDGE, NO_BASELINE, NO_SAMPLES)


@dataclass(frozen=True)
class Verdict:
    """One view's verdict. `verdict` is one of `VERDICTS`; `sentence` says it in words (starting with
    the verdict for "cannot judge", "no baseline" and "no samples"). Correlations are Pearson r in
    [-1, 1], NaN where undefined; counts are of defined (finite) correlations."""

    verdict: str
    sentence: str
    n_samples: int
    n_holdout: int
    sample_median: float
    holdout_low: float
    holdout_p99: float
    n_above_p99: int | None

    @property
    def judged(self) -> bool:
        """True when the verdict is "judged" (the samples can be compared with the held-out images)."""
        return self.verdict == JUDGED


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if len(values) else float("nan")


def judge(samples_r, holdout_r, low_quantile: float = LOW_QUANTILE) -> Verdict:
    """The verdict on samples' highest correlations against real held-out images' in the same view.

    samples_r: (n,) float, each sample's highest Pearson r with the training set (r_max), in [-1, 1];
        NaN (a constant image) is left out.
    holdout_r: (m,) float, the same for real held-out images (the held-out baseline); NaN left out;
        empty or all-NaN gives "no baseline".
    low_quantile: in (0, 0.5); the held-out quantile the samples' median must reach (default 0.05).

    Returns a `Verdict`: "no samples" when no sample has a defined r; "no baseline" when no held-out
    image has; "cannot judge" when median(samples) < quantile(holdout, low_quantile); else "judged".
    Raises ValueError for a quantile outside (0, 0.5).
    """
    if not 0.0 < low_quantile < 0.5:
        raise ValueError(f"low_quantile must lie in (0, 0.5), got {low_quantile}")
    s = np.asarray(samples_r, float).ravel()
    h = np.asarray(holdout_r, float).ravel()
    s, h = s[np.isfinite(s)], h[np.isfinite(h)]
    median = float(np.median(s)) if len(s) else float("nan")
    low, p99 = _quantile(h, low_quantile), _quantile(h, HIGH_QUANTILE)
    above = int((s >= p99).sum()) if len(h) else None
    pct = f"{100 * low_quantile:g}"
    args = dict(n_samples=len(s), n_holdout=len(h), sample_median=median, holdout_low=low, holdout_p99=p99,
                n_above_p99=above)
    if not len(s):
        return Verdict(NO_SAMPLES, "no samples: no sample has a defined correlation (constant images)", **args)
    if not len(h):
        return Verdict(NO_BASELINE, f"no baseline: no real held-out image to compare with, so no correlation can "
                       f"be called high or low (median r of the {len(s)} samples {median:.3f})", **args)
    count = f"{above} of {len(s)} samples ({above / len(s):.1%}) reach the held-out 99th percentile {p99:.3f}"
    if median < low:
        sentence = (f"cannot judge: samples do not yet look like real images (median r {median:.3f} against "
                    f"held-out {pct}th percentile {low:.3f}); the generator has not learned the data, so its "
                    "shares say nothing about memorization")
        if above:
            sentence += f"; still, {count}: look at them, they may be copies"
        return Verdict(CANNOT_JUDGE, sentence, **args)
    return Verdict(JUDGED, f"{count}, which about 1 % of real unseen images reach (median r {median:.3f}; held-out "
                   f"{pct}th percentile {low:.3f})", **args)


@dataclass(frozen=True)
class Concentration:
    """How the samples' nearest training images spread, against the held-out images'. Shares are in
    [0, 1] (NaN with no defined match); `concentrated` and `sentence` (empty unless concentrated)
    follow the rule in the module docstring."""

    top_share: float
    top_index: int | None
    n_matched: int
    n_samples: int
    holdout_top_share: float
    n_holdout: int
    concentrated: bool
    sentence: str


def _top(index) -> tuple[float, int | None, int, int]:
    values = np.asarray(index, float).ravel()
    values = values[np.isfinite(values) & (values >= 0)].astype(np.int64)
    if not len(values):
        return float("nan"), None, 0, 0
    counts = np.bincount(values)
    return float(counts.max() / len(values)), int(counts.argmax()), int((counts > 0).sum()), len(values)


def nearest_indices(table, view: str) -> np.ndarray:
    """(n,) float: the nearest training image (`train_index`) of each image of `view` in a memorization
    table (columns view, r_max, train_index) whose r is defined."""
    part = table[table["view"].astype(str) == view]
    return part["train_index"].to_numpy(float)[np.isfinite(part["r_max"].to_numpy(float))]


def concentration(sample_index, holdout_index, n_train: int | None = None) -> Concentration:
    """Whether the samples concentrate on few training images (mode collapse), in one view.

    sample_index: (n,) the training-set index (0-based integers) of each sample's nearest training
        image (highest Pearson r); NaN or −1 (no match: the memorization table's convention) is left out.
    holdout_index: (m,) the same for the real held-out images.
    n_train: the training set's size, only for the sentence.

    Concentrated when the samples' largest share of one nearest training image is at least
    `CONCENTRATION_MIN_SHARE` and at least `CONCENTRATION_RATIO` × the held-out images' largest share;
    never without held-out images.
    """
    top, index, matched, n = _top(sample_index)
    held, _, _, m = _top(holdout_index)
    flagged = bool(n and m and top >= CONCENTRATION_MIN_SHARE and top >= CONCENTRATION_RATIO * held)
    sentence = ""
    if flagged:
        of = f" of {n_train}" if n_train else ""
        sentence = (f"concentrated: {top:.0%} of the samples have one and the same nearest training image "
                    f"(index {index}; held-out images: at most {held:.0%}), and only {matched}{of} training "
                    "images are nearest to any sample: the generator covers few training images (mode collapse), "
                    "so its shares describe those few; look at that image and its matches")
    return Concentration(top, index, matched, n, held, m, flagged, sentence)
