"""Bootstrap intervals over samples and over training subjects: against a brute-force loop with the same
random draws, and against hand-checked cases."""

import numpy as np
import pytest

from medmem.report import bootstrap
from medmem.report.bootstrap import cluster_codes, mean_intervals, percentile_interval, resampled_means


def brute_force(values, clusters, resamples, seed):
    """One resample at a time: draw G subjects with replacement, gather their images, take the mean."""
    rng = np.random.default_rng(seed)
    members = {g: np.flatnonzero(clusters == g) for g in np.unique(clusters)}
    g = len(members)
    out = []
    for _ in range(resamples):
        drawn = rng.integers(0, g, g)
        images = np.concatenate([members[c] for c in drawn])
        out.append(values[images].mean(axis=0))
    return np.array(out)


def test_vectorised_equals_a_loop_with_the_same_draws(monkeypatch):
    rng = np.random.default_rng(1)
    values = np.stack([rng.uniform(0.5, 1, 9), rng.integers(0, 2, 9)], axis=1)
    clusters = np.array([0, 0, 1, 2, 2, 2, 1, 3, 0])
    for codes in (clusters, np.arange(9)):  # by subject, and by image (the ordinary bootstrap)
        expected = brute_force(values, codes, 57, seed=5)
        np.testing.assert_allclose(resampled_means(values, codes, 57, seed=5), expected, rtol=1e-12)
        monkeypatch.setattr(bootstrap, "_CHUNK", 10)  # several chunks: the same stream of draws
        np.testing.assert_allclose(resampled_means(values, codes, 57, seed=5), expected, rtol=1e-12)
        monkeypatch.undo()
    # the ordinary bootstrap by hand: n indices drawn per resample, the mean of those images
    rng = np.random.default_rng(5)
    by_hand = [values[rng.integers(0, 9, 9), 0].mean() for _ in range(57)]
    np.testing.assert_allclose(resampled_means(values[:, 0], np.arange(9), 57, seed=5)[:, 0], by_hand, rtol=1e-12)
    lo, hi = percentile_interval(expected)
    np.testing.assert_allclose([lo, hi], np.percentile(expected, [2.5, 97.5], axis=0))


def test_deterministic_for_the_fixed_seed():
    rng = np.random.default_rng(2)
    values, subjects = rng.uniform(size=40), rng.integers(0, 6, 40).astype(str)
    first, second = mean_intervals(values, subjects), mean_intervals(values, subjects)
    for source in ("samples", "subjects"):
        np.testing.assert_array_equal(first[source], second[source])


def test_identical_samples_collapse_the_interval_to_the_value():
    values = np.stack([np.full(30, 0.93), np.ones(30)], axis=1)
    found = mean_intervals(values, [f"s{i % 5}" for i in range(30)])
    for lo, hi in found.values():
        np.testing.assert_allclose(lo, [0.93, 1.0])
        np.testing.assert_allclose(hi, [0.93, 1.0])


def test_one_subject_holding_every_copy_widens_the_interval():
    # 10 subjects × 20 images; subject 0's 20 images are copies (share 10 %). Over subjects, a resample's
    # share is k/10 with k ~ Binomial(10, 0.1) the times subject 0 is drawn: P(k = 0) = 0.349 > 2.5 %, so
    # lo = 0; P(k <= 2) = 0.930 < 97.5 % < P(k <= 3) = 0.987, so hi = 0.3. Over samples the share is a
    # binomial proportion of 200: 0.1 ± 1.96·√(0.1·0.9/200) = 0.1 ± 0.042.
    copies = np.r_[np.ones(20), np.zeros(180)]
    subjects = np.repeat([f"s{g}" for g in range(10)], 20)
    shares = resampled_means(copies, cluster_codes(subjects))[:, 0]
    np.testing.assert_allclose(shares * 10, np.round(shares * 10), atol=1e-9)  # multiples of 1/10 only
    found = mean_intervals(copies, subjects)
    (lo_s,), (hi_s,) = found["samples"]
    (lo_c,), (hi_c,) = found["subjects"]
    assert (lo_c, hi_c) == (pytest.approx(0.0), pytest.approx(0.3))
    assert 0.04 < lo_s < 0.08 and 0.12 < hi_s < 0.16
    assert hi_c - lo_c > 3 * (hi_s - lo_s)
    # the same images spread over the subjects (two copies each): no wider than the sample bootstrap
    spread = np.tile(np.r_[np.ones(2), np.zeros(18)], 10)
    (lo_e,), (hi_e,) = mean_intervals(spread, subjects)["subjects"]
    assert hi_e - lo_e <= hi_s - lo_s


def test_one_subject_has_no_subject_interval_and_unmatched_images_are_their_own_cluster():
    values = np.linspace(0.5, 1.0, 12)
    found = mean_intervals(values, ["s0"] * 12)
    assert np.isnan(found["subjects"][0]).all() and np.isfinite(found["samples"][0]).all()
    alone = mean_intervals(values, [None] * 12)  # each its own cluster: the ordinary bootstrap
    np.testing.assert_array_equal(alone["subjects"], alone["samples"])
    np.testing.assert_array_equal(cluster_codes(["a", None, "b", "a", None]), [0, 2, 1, 0, 3])
    empty = mean_intervals(np.zeros((0, 2)), [])
    assert all(np.isnan(v).all() for pair in empty.values() for v in pair)
