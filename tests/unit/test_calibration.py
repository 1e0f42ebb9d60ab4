import numpy as np
import pandas as pd
import pytest

from medmem.memorization.calibration import calibrate, cross_fitted_false_alarm, holdout_p99, summary_markdown
from medmem.memorization.planted import plant_copies
from medmem.memorization.search import highest_correlation


def test_planted_copies_are_what_they_say():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 200, (20, 2, 6, 6), dtype=np.uint8)
    images, manifest = plant_copies(train, 4, seed=1)
    assert list(manifest.columns) == ["query", "perturbation", "source_index"]
    assert len(images) == len(manifest) == 6 * 4
    by = {p: g for p, g in manifest.groupby("perturbation")}
    src = by["exact"].source_index.to_numpy()
    assert all((g.source_index.to_numpy() == src).all() for g in by.values())  # same sources everywhere
    np.testing.assert_array_equal(images[by["exact"]["query"]], train[src])
    shifted = images[by["shift_1px"]["query"]]
    np.testing.assert_array_equal(shifted[..., 1:, 1:], train[src][..., :-1, :-1])
    assert not shifted[..., 0, :].any() and not shifted[..., :, 0].any()
    np.testing.assert_array_equal(images[by["flip"]["query"]], train[src][..., ::-1])
    np.testing.assert_array_equal(images[by["brightness_contrast"]["query"]],
                                  np.clip(np.rint(train[src] * 1.15 + 10), 0, 255))
    again, _ = plant_copies(train, 4, seed=1)
    np.testing.assert_array_equal(images, again)


def test_p99_and_cross_fitted_false_alarms_by_hand():
    r = np.array([0.1, 0.2, 0.3, 0.4, np.nan])
    assert holdout_p99(r) == pytest.approx(0.4 - 0.01 * 3 * 0.1)  # numpy's linear quantile of 4 values
    # two subjects: A has the low values, B the high ones; each half's p99 judged on the other
    r = np.array([0.50, 0.52, 0.90, 0.95])
    subjects = np.array(["A", "A", "B", "B"])
    p_a, p_b = holdout_p99(r[:2]), holdout_p99(r[2:])
    expected = (np.mean(r[2:] >= p_a) + np.mean(r[:2] >= p_b)) / 2
    assert cross_fitted_false_alarm(r, subjects) == pytest.approx(expected) == pytest.approx(0.5)
    assert np.isnan(cross_fitted_false_alarm(r, np.array(["A"] * 4)))


def _table(values, view="0", name="t1", indices=None):
    n = len(values)
    return pd.DataFrame({"query": np.arange(n), "view": view, "channel_name": name, "r_max": values,
                         "train_index": indices if indices is not None else np.zeros(n, int)})


def test_detection_rates_by_hand():
    holdout = _table(np.linspace(0.80, 0.90, 11))
    subjects = pd.Series(["A"] * 6 + ["B"] * 5, index=np.arange(11))
    planted = _table([1.0, 1.0, 0.97, 0.85, np.nan, 0.93, 0.86, 0.87], indices=[3, 4, 9, 5, -1, 7, 2, 2])
    manifest = pd.DataFrame({"query": np.arange(8),
                             "perturbation": ["exact", "exact", "noise", "noise", "flip", "flip", "shift", "shift"],
                             "source_index": [3, 4, 5, 5, 7, 7, 2, 2]})
    detection, baseline = calibrate(holdout, subjects, planted, manifest, (0.90, 0.95))
    d = detection.set_index(["perturbation", "threshold"])
    assert d.loc[("exact", "0.95"), "detected"] == 1.0 and d.loc[("exact", "0.95"), "source_matched"] == 1.0
    assert d.loc[("noise", "0.95"), "detected"] == 0.5 and d.loc[("noise", "0.95"), "source_matched"] == 0.0
    assert d.loc[("flip", "0.90"), "n_defined"] == 1 and d.loc[("flip", "0.90"), "detected"] == 1.0
    assert d.loc[("exact", "0.90"), "false_alarm_holdout"] == pytest.approx(1 / 11)  # only 0.90 itself
    p99 = np.quantile(np.linspace(0.80, 0.90, 11), 0.99)
    assert d.loc[("noise", "holdout_p99"), "threshold_value"] == pytest.approx(p99)
    assert baseline.iloc[0]["p99"] == pytest.approx(p99) and baseline.iloc[0]["median"] == pytest.approx(0.85)
    text = summary_markdown(detection, baseline, "toy")
    limits = text.split("## Limits")[1]
    assert "**Not detected**: copies with `shift`" in limits and "`exact`" not in limits and "`noise`" not in limits


def test_exact_copies_planted_into_queries_are_found_with_their_source():
    rng = np.random.default_rng(2)
    from scipy.ndimage import gaussian_filter

    train = gaussian_filter(rng.normal(size=(30, 1, 16, 16)), (0, 0, 2, 2))
    train = np.clip((train - train.min()) / np.ptp(train) * 255, 0, 255).astype(np.uint8)
    images, manifest = plant_copies(train, 5, seed=0)
    result = highest_correlation(train, images, top_k=1, progress=False)
    exact = manifest[manifest.perturbation == "exact"]
    np.testing.assert_allclose(result.r["0"][exact["query"], 0], 1.0, atol=1e-12)
    np.testing.assert_array_equal(result.index["0"][exact["query"], 0], exact["source_index"])
    bc = manifest[manifest.perturbation == "brightness_contrast"]
    assert (result.r["0"][bc["query"], 0] > 0.99).all()  # Pearson ignores gain and offset (up to clipping)


def test_robust_perturbations_are_what_they_say():
    from scipy.ndimage import rotate

    from medmem.memorization.planted import ALL_PERTURBATIONS

    rng = np.random.default_rng(3)
    train = rng.integers(1, 200, (12, 3, 20, 20), dtype=np.uint8)
    train[:, 2] = 0
    train[::2, 2, 5:9, 6:10] = 2  # a tumour label in every other training slice
    recipients = rng.integers(1, 200, (4, 3, 20, 20), dtype=np.uint8)
    recipients[:, 2] = 0
    images, manifest = plant_copies(train, 5, seed=2, perturbations=ALL_PERTURBATIONS, seg_channel=2,
                                    recipients=recipients)
    by = {p: g for p, g in manifest.groupby("perturbation")}
    assert set(by) == set(ALL_PERTURBATIONS) and len(images) == len(manifest)
    src = by["exact"].source_index.to_numpy()
    rotated = images[by["rotate_5deg"]["query"]].astype(float)
    for img, s in zip(rotated, src):  # ±5° about the centre (scipy's own rotation, bilinear), inside the disc
        yy, xx = np.mgrid[:20, :20]
        inner = (yy - 9.5) ** 2 + (xx - 9.5) ** 2 < 7 ** 2
        errors = [np.abs(img[0] - np.clip(np.rint(rotate(train[s, 0].astype(float), a, reshape=False, order=1)),
                                            0, 255))[inner].max() for a in (5, -5)]
        assert min(errors) <= 1
    cropped = images[by["crop_resize_90"]["query"]]
    assert cropped.shape == (5, 3, 20, 20) and not np.array_equal(cropped, train[src])
    elastic = images[by["elastic"]["query"]].astype(float)
    assert 0 < np.abs(elastic - train[src]).mean() < np.abs(train[src] - train[src[::-1]]).mean() / 2
    partial = by["partial"]
    donors = partial.source_index.to_numpy()
    assert (donors % 2 == 0).all()  # only slices with a tumour give one
    for img, d in zip(images[partial["query"]], donors):
        inside = train[d, 2] > 0
        np.testing.assert_array_equal(img[:, inside], train[d][:, inside])  # the tumour, all channels
        assert any(np.array_equal(img[:, ~inside], r[:, ~inside]) for r in recipients)  # the rest: a recipient
    # without a segmentation channel there is no partial copy; the study's perturbations are unchanged
    plain, m2 = plant_copies(train, 5, seed=2, perturbations=ALL_PERTURBATIONS)
    assert "partial" not in set(m2.perturbation)
    study, _ = plant_copies(train, 5, seed=2)
    np.testing.assert_array_equal(plain[:len(study)], study)


def _two_views(x, y, indices=None):
    return pd.concat([_table(np.asarray(x), "x", "x", indices), _table(np.asarray(y), "y", "y", indices)],
                     ignore_index=True)


def test_combined_verdict_by_hand():
    from medmem.memorization.calibration import combined_false_alarm, combined_threshold, wide

    holdout = _two_views([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])
    subjects = pd.Series(["A", "A", "B", "B"], index=np.arange(4))
    # both views: median 0.25, p99 0.397 (numpy's linear quantile), scale 0.147; the largest standardised
    # score of images 0 and 3 is 0.15 / 0.147, of 1 and 2 0.05 / 0.147; the p99 of these is the top one
    scale = 0.397 - 0.25
    assert combined_threshold(wide(holdout)) == pytest.approx(0.15 / scale)
    # each half flags every image of the other (a half's p99 lies below the other half's values)
    assert combined_false_alarm(wide(holdout), subjects.to_numpy()) == pytest.approx(1.0)
    planted = _two_views([0.5, 0.35, np.nan], [0.0, 0.35, 0.45], indices=[7, 8, 2])
    manifest = pd.DataFrame({"query": [0, 1, 2], "perturbation": ["a", "b", "c"], "source_index": [7, 9, 3]})
    detection, baseline = calibrate(holdout, subjects, planted, manifest, (0.9,))
    c = detection[detection.view == "combined"].set_index("perturbation")
    assert c.loc["a", "detected"] == 1.0 and c.loc["a", "source_matched"] == 1.0  # x: 0.25 / 0.147 = 1.7
    assert c.loc["b", "detected"] == 0.0  # 0.10 / 0.147 in both views: below the combined threshold
    assert c.loc["c", "detected"] == 1.0 and c.loc["c", "source_matched"] == 0.0  # y flags it, wrong source
    assert c["threshold_value"].iloc[0] == pytest.approx(0.15 / scale)
    # only the views named are combined: x alone is no combination
    detection, _ = calibrate(holdout, subjects, planted, manifest, (0.9,), combine=["x", "z"])
    assert "combined" not in set(detection.view)
    assert (c["threshold"] == "holdout_p99").all() and baseline.iloc[-1]["view"] == "combined"


def test_combined_false_alarms_are_controlled_for_the_number_of_views():
    from medmem.memorization.calibration import combined_false_alarm, wide

    rng = np.random.default_rng(0)
    n, views = 4000, 6
    holdout = pd.concat([_table(rng.normal(size=n), str(v), str(v)) for v in range(views)], ignore_index=True)
    subjects = np.repeat(np.arange(40), n // 40)
    h = wide(holdout)
    combined = combined_false_alarm(h, subjects)
    # flagged by any view at that view's own p99: about 1 − 0.99^6 ≈ 5.9 %
    any_view = np.mean((h.to_numpy() >= np.quantile(h.to_numpy(), 0.99, axis=0)).any(1))
    assert 0.005 <= combined <= 0.016 and any_view > 0.045
