"""The verdict rule (medmem.memorization.verdict.judge) on hand-made distributions: hand-computed
quantiles, medians and counts, borderline cases either side of the threshold, NaNs, no baseline."""

import numpy as np
import pytest

from medmem.memorization.verdict import CANNOT_JUDGE, JUDGED, NO_BASELINE, NO_SAMPLES, VERDICTS, concentration, judge

# 101 held-out images, r = 0.800, 0.801, ..., 0.900: 5th percentile h[5] = 0.805, 99th h[99] = 0.899
HOLDOUT = 0.8 + 0.001 * np.arange(101)


def test_learned_samples_are_judged_and_counted_above_the_p99():
    v = judge([0.81, 0.85, 0.88, 0.90, 0.95], HOLDOUT)
    assert v.verdict == JUDGED and v.judged
    assert v.sample_median == pytest.approx(0.88)
    assert v.holdout_low == pytest.approx(0.805) and v.holdout_p99 == pytest.approx(0.899)
    assert v.n_above_p99 == 2 and v.n_samples == 5 and v.n_holdout == 101  # 0.90 and 0.95
    assert v.sentence.startswith("2 of 5 samples (40.0%) reach the held-out 99th percentile 0.899")
    assert "median r 0.880" in v.sentence and "5th percentile 0.805" in v.sentence


def test_noise_samples_cannot_be_judged():
    samples = np.random.default_rng(0).uniform(0.2, 0.6, 24)
    v = judge(samples, HOLDOUT)
    assert v.verdict == CANNOT_JUDGE and not v.judged and v.n_above_p99 == 0
    assert v.sentence == (f"cannot judge: samples do not yet look like real images (median r {np.median(samples):.3f} "
                          "against held-out 5th percentile 0.805); the generator has not learned the data, so its "
                          "shares say nothing about memorization")


def test_copies_among_noise_are_still_reported():
    v = judge([0.5] * 20 + [1.0] * 3, HOLDOUT)
    assert v.verdict == CANNOT_JUDGE and v.n_above_p99 == 3
    assert "still, 3 of 23 samples (13.0%) reach the held-out 99th percentile 0.899: look at them" in v.sentence


def test_borderline_median_exactly_at_the_threshold_is_judged_just_below_is_not():
    low = float(np.quantile(HOLDOUT, 0.05))
    assert low == HOLDOUT[5]  # the 5th percentile of 101 values is the 6th lowest, no interpolation
    assert judge([low] * 3, HOLDOUT).verdict == JUDGED
    assert judge([np.nextafter(low, 0)] * 3, HOLDOUT).verdict == CANNOT_JUDGE
    # the median, not the mean: two samples far below do not outweigh three at the threshold
    assert judge([0.0, 0.0, low, low, 0.99], HOLDOUT).verdict == JUDGED
    assert judge([0.0, 0.0, 0.0, low, 1.0], HOLDOUT).verdict == CANNOT_JUDGE


def test_a_small_holdout_interpolates_between_its_lowest_images():
    v = judge([0.806, 0.807, 0.9], [0.92, 0.80, 0.90, 0.85])  # position 0.05 × 3 = 0.15: 0.80 + 0.15 × 0.05
    assert v.holdout_low == pytest.approx(0.8075) and v.verdict == CANNOT_JUDGE
    assert judge([0.808, 0.81, 0.9], [0.92, 0.80, 0.90, 0.85]).verdict == JUDGED
    assert judge([0.95], [0.9]).verdict == JUDGED  # one held-out image: its own r is the threshold


def test_nans_are_left_out():
    with_nan = judge([np.nan, 0.9, 0.9, np.nan], np.concatenate([HOLDOUT, [np.nan] * 7]))
    assert with_nan == judge([0.9, 0.9], HOLDOUT)
    assert with_nan.n_samples == 2 and with_nan.n_holdout == 101 and with_nan.verdict == JUDGED
    none = judge([np.nan, np.nan], HOLDOUT)
    assert none.verdict == NO_SAMPLES and none.sentence.startswith("no samples") and np.isnan(none.sample_median)


@pytest.mark.parametrize("holdout", [[], [np.nan, np.nan]])
def test_an_empty_holdout_gives_no_baseline(holdout):
    v = judge([0.3, 0.5, 0.99], holdout)
    assert v.verdict == NO_BASELINE and v.n_above_p99 is None and np.isnan(v.holdout_low)
    assert v.sentence.startswith("no baseline: no real held-out image") and "median r of the 3 samples 0.500" in \
        v.sentence


def test_samples_drawn_like_real_images_are_judged():
    """Samples from the held-out images' own distribution: their median lies below its 5th percentile
    with probability P(Binomial(24, 0.05) >= 12) < 1e-10, so never in 200 draws."""
    rng = np.random.default_rng(1)
    holdout = np.clip(rng.normal(0.93, 0.03, 73), -1, 1)
    verdicts = {judge(rng.choice(holdout, 24), holdout).verdict for _ in range(200)}
    assert verdicts == {JUDGED}


def test_quantile_must_be_a_low_one():
    with pytest.raises(ValueError, match="low_quantile"):
        judge([0.9], HOLDOUT, 0.5)
    assert set(VERDICTS) == {JUDGED, CANNOT_JUDGE, NO_BASELINE, NO_SAMPLES}
    assert judge([0.84], HOLDOUT, 0.5 - 1e-9).verdict == CANNOT_JUDGE  # below the held-out median 0.85


# --- concentration: do the samples' nearest training images spread as the held-out images' do? ----------
# 100 held-out images spread over 50 training images, two each: largest share 2/100 = 0.02
HOLDOUT_INDEX = np.repeat(np.arange(50), 2)


def test_samples_on_few_training_images_are_concentrated():
    # 43 of 100 samples nearest to image 7, the rest one each on 57 others: 58 distinct, largest 0.43
    samples = np.r_[[7] * 43, np.arange(100, 157)]
    c = concentration(samples, HOLDOUT_INDEX, n_train=200)
    assert c.concentrated and c.top_share == pytest.approx(0.43) and c.top_index == 7
    assert c.n_matched == 58 and c.n_samples == 100 and c.holdout_top_share == pytest.approx(0.02)
    assert c.sentence.startswith("concentrated: 43% of the samples have one and the same nearest training image "
                                 "(index 7; held-out images: at most 2%), and only 58 of 200 training images")


def test_samples_spread_like_held_out_images_are_not_concentrated():
    samples = np.random.default_rng(0).integers(0, 194, 1000)  # uniform: largest share about 1 %
    c = concentration(samples, HOLDOUT_INDEX)
    assert not c.concentrated and c.sentence == "" and c.top_share < 0.02


def test_both_bounds_of_the_concentration_rule():
    # held-out largest share 0.2 (one image in 20 of 100): the samples need 0.4, not just 0.1
    held = np.r_[[0] * 20, np.arange(1, 81)]
    assert not concentration(np.r_[[5] * 39, np.arange(100, 161)], held).concentrated  # 0.39 < 2 × 0.2
    assert concentration(np.r_[[5] * 40, np.arange(100, 160)], held).concentrated  # 0.40, exactly twice
    # held-out largest share 0.02: the floor 0.1 decides
    assert not concentration(np.r_[[5] * 9, np.arange(100, 191)], HOLDOUT_INDEX).concentrated  # 0.09
    assert concentration(np.r_[[5] * 10, np.arange(100, 190)], HOLDOUT_INDEX).concentrated  # 0.10


def test_no_matches_and_no_holdout_never_concentrate():
    c = concentration([np.nan, -1, 3, 3, 3], [])  # NaN and -1 (no match) left out: 3 of 3 on image 3
    assert c.n_samples == 3 and c.top_share == 1.0 and not c.concentrated
    c = concentration([], HOLDOUT_INDEX)
    assert c.n_samples == 0 and np.isnan(c.top_share) and not c.concentrated
