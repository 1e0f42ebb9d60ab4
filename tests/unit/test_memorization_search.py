"""Exactness of the highest-correlation search against the study's own per-pair scipy.stats.pearsonr."""

import warnings

import numpy as np
import pytest
from scipy import stats

from medmem.memorization.search import highest_correlation, screen_epsilon


def brute_force(train, queries, mr):
    """The study's method: a double loop of scipy.stats.pearsonr, per channel and combined view."""
    n, m, C = len(train), len(queries), train.shape[1]
    views = [str(c) for c in range(C)] + (["mr_mean"] if mr else []) + ["all"]
    r = {v: np.full((m, n), np.nan) for v in views}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input warnings: r is NaN there, as intended
        for i in range(m):
            for j in range(n):
                per = [stats.pearsonr(queries[i, c].ravel().astype(float), train[j, c].ravel().astype(float))[0]
                       for c in range(C)]
                for c in range(C):
                    r[str(c)][i, j] = per[c]
                if mr:
                    r["mr_mean"][i, j] = np.mean([per[c] for c in mr])
                r["all"][i, j] = stats.pearsonr(queries[i].ravel().astype(float), train[j].ravel().astype(float))[0]
    return r


def expected_top(r_row, k):
    ok = np.flatnonzero(np.isfinite(r_row))
    order = ok[np.lexsort((ok, -r_row[ok]))][:k]  # highest first, ties to the lowest index
    return r_row[order], order


def near_duplicate_images(rng, n, c=3, size=12):
    """Smooth images plus adjacent-slice-like near-duplicates, a duplicate pair and constant channels."""
    base = rng.normal(size=(n // 3 + 1, c, size, size))
    from scipy.ndimage import gaussian_filter

    base = gaussian_filter(base, sigma=(0, 0, 1.5, 1.5))
    images = []
    for b in base:
        for step in range(3):  # three "adjacent slices": tiny drift between them
            images.append(b + 0.03 * step * rng.normal(size=b.shape))
    images = np.array(images[:n])
    images = (images - images.min()) / (images.max() - images.min()) * 255
    out = np.clip(np.round(images), 0, 255).astype(np.uint8)
    if n > 5:
        out[5] = out[2]  # an exact duplicate: ties must go to the lowest index
    if c > 1 and n > 7:
        out[7, 1] = 17  # a constant channel
    return out


@pytest.mark.parametrize("margin, chunk, cache_gb", [(32, 64, 4.0), (0, 16, 4.0), (32, 64, 1e-9)])
def test_search_equals_scipy_brute_force(margin, chunk, cache_gb):  # cache_gb 1e-9: nothing kept between blocks
    rng = np.random.default_rng(0)
    train = near_duplicate_images(rng, 40)
    queries = np.concatenate([near_duplicate_images(rng, 9), train[[3, 5, 12]]])
    queries[0, 2] = 0  # a constant query channel
    mr = [0, 1]
    result = highest_correlation(train, queries, top_k=4, mr_channels=mr, block_queries=5, block_train=7,
                                 chunk=chunk, margin=margin, cache_gb=cache_gb, progress=False)
    reference = brute_force(train, queries, mr)
    assert result.views == ["0", "1", "2", "mr_mean", "all"]
    for view in result.views:
        for i in range(len(queries)):
            exp_r, exp_i = expected_top(reference[view][i], 4)
            got_r, got_i = result.r[view][i], result.index[view][i]
            if len(exp_r) == 0:
                assert np.isnan(got_r).all() and (got_i == -1).all(), (view, i)
                continue
            np.testing.assert_allclose(got_r[: len(exp_r)], exp_r, atol=1e-6, rtol=0, err_msg=f"{view} {i}")
            np.testing.assert_array_equal(got_i[: len(exp_i)], exp_i, err_msg=f"{view} {i}")
    assert result.constant_queries["2"] == 1 and result.constant_queries["all"] == 0
    assert result.constant_train["1"] == 1 and result.constant_train["mr_mean"] == 1
    # a copy of training image 5 (a duplicate of 2) is matched to 2, the lower index, with r = 1
    assert result.index["0"][-2, 0] == 2 and result.r["0"][-2, 0] == pytest.approx(1.0, abs=1e-12)
    if margin == 0:
        assert result.fallbacks > 0  # the exhaustive path ran and stayed exact


def test_constant_query_gives_nan_and_never_crashes():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 255, (10, 2, 6, 6), dtype=np.uint8)
    train[:, 1] = 0  # every training segmentation empty
    queries = np.zeros((3, 2, 6, 6), np.uint8)
    queries[1] = rng.integers(0, 255, (2, 6, 6))
    result = highest_correlation(train, queries, top_k=2, progress=False)
    assert np.isnan(result.r["0"][[0, 2], 0]).all() and np.isfinite(result.r["0"][1, 0])
    assert np.isnan(result.r["1"]).all() and (result.index["1"] == -1).all()
    assert result.constant_queries == {"0": 2, "1": 2, "all": 2}  # query 1 is not constant, yet unmatched


def test_error_bound_is_stated_and_tight_enough_to_separate_adjacent_slices():
    assert screen_epsilon("float32", 8192) < 1e-3
    assert screen_epsilon("tf32", 8192) < 5e-3
    assert screen_epsilon("float32", 65536) > 3e-3  # why the pixel dimension is chunked


def test_shapes_must_match():
    with pytest.raises(ValueError, match="do not match"):
        highest_correlation(np.zeros((2, 1, 4, 4), np.uint8), np.zeros((2, 1, 5, 4), np.uint8), progress=False)


@pytest.mark.parametrize("kept", [False, True])  # training rows read from the array, or from the kept copy
@pytest.mark.parametrize("slab_bytes", [1, 10**9])  # one query per slab (CPU), all pairs in one slab (GPU)
def test_exact_products_are_exact_integers(slab_bytes, kept):
    import torch

    from medmem.memorization.search import _exact_products, _Images

    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, (9, 2, 64, 64), dtype=np.uint8)
    train[4] = 255  # the largest products: sums far beyond float32's exact integers
    queries = rng.integers(0, 256, (4, 2, 64 * 64), dtype=np.uint8)
    queries[1] = 255
    pair_q = np.array([0, 0, 1, 1, 1, 3])
    pair_t = np.array([4, 8, 0, 4, 7, 4])
    images = _Images(train)
    if kept:
        images.kept = torch.from_numpy(train.reshape(9, 2, -1).copy())
    got = _exact_products(torch.from_numpy(queries.astype(np.float32)), images, pair_q, pair_t, slab_bytes)
    flat = train.reshape(9, 2, -1).astype(np.int64)
    want = np.einsum("pcd,pcd->pc", queries[pair_q].astype(np.int64), flat[pair_t])
    assert want[3, 0] == 255 * 255 * 64 * 64
    np.testing.assert_array_equal(got, want)


def test_one_channel_concatenated_view_is_that_channel():
    rng = np.random.default_rng(4)
    train = near_duplicate_images(rng, 30, c=1)
    queries = np.concatenate([near_duplicate_images(rng, 6, c=1), train[[2, 9]]])
    result = highest_correlation(train, queries, top_k=3, block_queries=4, block_train=8, chunk=32, progress=False)
    reference = brute_force(train, queries, [])
    assert result.views == ["0", "all"]
    for i in range(len(queries)):
        exp_r, exp_i = expected_top(reference["0"][i], 3)
        for view in result.views:
            np.testing.assert_allclose(result.r[view][i], exp_r, atol=1e-6, rtol=0)
            np.testing.assert_array_equal(result.index[view][i], exp_i)


def test_exhaustive_search_keeps_a_running_top_k_across_training_blocks():
    import torch

    from medmem.memorization.search import _Buffers, _exhaustive, _Images, _merge_top, _ViewDefs

    r, i = _merge_top(np.array([[0.9, np.nan]]), np.array([[4, -1]]), np.array([[0.9, 0.95, np.nan]]),
                      np.array([[2, 7, 1]]))
    np.testing.assert_array_equal(r, [[0.95, 0.9]])
    np.testing.assert_array_equal(i, [[7, 2]])  # equal r: the lower index first
    rng = np.random.default_rng(5)
    train = near_duplicate_images(rng, 40)
    queries = np.concatenate([near_duplicate_images(rng, 3), train[[5]]])
    q, t = _Images(queries), _Images(train)
    for images in (q, t):
        images.load(0, images.n, _Buffers(torch.device("cpu")), "x")  # fills the exact sums
    views = _ViewDefs(3, [0, 1])
    got_r, got_i = _exhaustive(torch.from_numpy(q.array.astype(np.float32)), q, t, np.arange(4), views, 3,
                               torch.device("cpu"), block=7)
    reference = brute_force(train, queries, [0, 1])
    for v, view in enumerate(views.names):
        for row in range(4):
            exp_r, exp_i = expected_top(reference[view][row], 3)
            np.testing.assert_allclose(got_r[v, row, : len(exp_r)], exp_r, atol=1e-12, rtol=0)
            np.testing.assert_array_equal(got_i[v, row, : len(exp_i)], exp_i)
    assert got_i[0, 3, 0] == 2  # training image 5 duplicates image 2: the lower index wins



def test_screen_is_within_its_bound_and_leaves_the_tf32_setting_alone():
    import torch

    from medmem.memorization.search import _screen_products

    rng = np.random.default_rng(6)
    z = rng.normal(size=(7, 300))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    zq, zt = torch.from_numpy(z[:3]).float(), torch.from_numpy(z[3:]).float()
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        for setting in (True, False):
            torch.backends.cuda.matmul.allow_tf32 = setting
            s = _screen_products(zq, zt, 64, torch.empty(3, 4), tf32=not setting)
            assert torch.backends.cuda.matmul.allow_tf32 is setting
            assert np.abs(s.numpy() - z[:3] @ z[3:].T).max() < screen_epsilon("float32", 64)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
