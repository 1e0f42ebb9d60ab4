"""The report's added views: flagged shares by hand, the matched query, the per-view pair figure."""

import numpy as np
import pandas as pd
import pytest

from medmem.report.views import flagged_shares, matched_query, view_pairs


def _rows(view, values, **extra):
    n = len(values)
    return pd.DataFrame({"query": np.arange(n), "view": view, "channel_name": view, "r_max": values,
                         "train_index": np.arange(n), "subject": "S", "slice": np.arange(n), **extra})


def test_flagged_shares_by_hand():
    holdout = pd.concat([_rows("all", [0.1, 0.2, 0.3, 0.4]), _rows("flip", [0.4, 0.3, 0.2, 0.1])])
    baseline = pd.DataFrame({"view": ["all", "flip"], "p99": [0.397, 0.397]})
    table = pd.concat([_rows("all", [0.5, 0.35, np.nan]), _rows("flip", [0.0, 0.35, 0.45])])
    shares = flagged_shares(table, holdout, baseline).set_index("view")
    assert shares.loc["all", "n_flagged"] == 1 and shares.loc["all", "share_flagged"] == pytest.approx(1 / 3)
    assert shares.loc["flip", "n_flagged"] == 1
    # combined: standardised scores (r − 0.25) / 0.147; threshold 0.15 / 0.147; samples 0 and 2 exceed it
    assert shares.loc["combined", "n_flagged"] == 2
    assert shares.loc["combined", "threshold"] == pytest.approx(0.15 / (0.397 - 0.25))
    only = flagged_shares(table, holdout, baseline, combine=["all"])
    assert "combined" not in set(only.view)


def test_matched_query_and_pair_figure():
    img = np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 5, 5)
    m = matched_query(img, -1, 2, True)
    expected = np.zeros_like(img)
    expected[:, :4, 2:] = img[..., ::-1][:, 1:, :3]  # out[y, x] = mirrored[y + 1, x − 2]
    np.testing.assert_array_equal(m, expected)
    np.testing.assert_array_equal(matched_query(img, pd.NA, pd.NA, pd.NA), img)
    samples = np.stack([img, img])
    table = pd.concat([_rows("0", [0.9, 0.8]), _rows("flip", [0.95, 0.7], shift_y=pd.array([-1, 0], "Int64"),
                                                     shift_x=pd.array([2, 0], "Int64"),
                                                     flipped=pd.array([True, False], "boolean"))])
    fig = view_pairs(table, samples, samples, ["0", "flip"], 1, "toy")
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert len(labels) == 2 and "shift (dy, dx) = (-1, 2), mirrored" in labels[1]
