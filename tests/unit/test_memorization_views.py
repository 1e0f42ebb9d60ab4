"""Shift-, flip-tolerant and foreground correlation against brute-force scipy.stats.pearsonr."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.stats import pearsonr

from medmem.memorization.views import foreground_correlation, shift_flip_correlation, translate, translations


def _smooth(rng, n, c, h, w, background=False):
    x = gaussian_filter(rng.normal(size=(n, c, h, w)), (0, 0, 1.5, 1.5))
    x = np.clip((x - x.min()) / np.ptp(x) * 255, 0, 255).astype(np.uint8)
    if background:  # a zero background around a random "brain"
        yy, xx = np.mgrid[:h, :w]
        for i in range(n):
            r = rng.uniform(0.25, 0.45) * h
            x[i, :, (yy - h / 2) ** 2 + (xx - w / 2) ** 2 > r * r] = 0
    return x


def _shift_by_hand(img, dy, dx):
    h, w = img.shape[-2:]
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[..., y, x] = img[..., y - dy, x - dx]
    return out


def test_translate_is_zero_filled_shift():
    img = np.arange(1, 26, dtype=np.uint8).reshape(1, 5, 5)
    for dy, dx in [(1, 1), (-2, 1), (0, -1), (2, 0), (-1, -2)]:
        np.testing.assert_array_equal(translate(img, dy, dx), _shift_by_hand(img, dy, dx))
    assert translations(1)[0] == (0, 0) and len(translations(2)) == 25


def _brute_shift(train, queries, shift, flip):
    """Best r (all channels concatenated) per query and training image over variants, by scipy."""
    M, N = len(queries), len(train)
    best = np.full((M, N), -np.inf)
    how = np.empty((M, N), object)
    for i in range(M):
        for m in ([False, True] if flip else [False]):
            q = queries[i][..., ::-1] if m else queries[i]
            for dy in range(-shift, shift + 1):
                for dx in range(-shift, shift + 1):
                    v = _shift_by_hand(q, dy, dx).ravel().astype(float)
                    if v.std() == 0:
                        continue
                    for j in range(N):
                        r = pearsonr(v, train[j].ravel().astype(float))[0]
                        if r > best[i, j] + 1e-12:
                            best[i, j], how[i, j] = r, (m, dy, dx)
    return best, how


@pytest.mark.parametrize("flip", [False, True])
def test_shift_flip_equals_brute_force(flip):
    rng = np.random.default_rng(4)
    train = _smooth(rng, 9, 2, 12, 11, background=True)
    queries = np.concatenate([_shift_by_hand(train[[2]], 1, -1), train[[5]][..., ::-1],
                              _shift_by_hand(train[[7]], -2, 0)[..., ::-1], _smooth(rng, 3, 2, 12, 11, background=True)])
    out = shift_flip_correlation(train, queries, shift=2, flip=flip, top_k=3, progress=False)
    best, how = _brute_shift(train, queries, 2, flip)
    view = out["flip" if flip else "shift"]
    for i in range(len(queries)):
        order = np.lexsort((np.arange(len(train)), -best[i]))[:3]
        np.testing.assert_allclose(view["r"][i], best[i, order], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(view["index"][i], order)
        m, dy, dx = how[i, order[0]]
        assert (view["flipped"][i, 0], view["dy"][i, 0], view["dx"][i, 0]) == (m, dy, dx)
    # the planted copies: found with their source and the translation that undoes the copy's
    assert view["index"][0, 0] == 2 and (view["dy"][0, 0], view["dx"][0, 0]) == (-1, 1)
    assert view["r"][0, 0] > 0.97
    if flip:
        assert view["index"][1, 0] == 5 and view["r"][1, 0] == pytest.approx(1.0, abs=1e-12)
        assert view["flipped"][1, 0] and view["index"][2, 0] == 7 and view["dy"][2, 0] == 2
    else:
        assert "flip" not in out


def test_foreground_equals_brute_force():
    rng = np.random.default_rng(5)
    train = _smooth(rng, 11, 3, 9, 8, background=True)
    queries = np.concatenate([train[[3]], _smooth(rng, 4, 3, 9, 8, background=True),
                              np.zeros((1, 3, 9, 8), np.uint8)])
    out = foreground_correlation(train, queries, top_k=4, block_queries=2, block_train=4, progress=False)
    for i, q in enumerate(queries):
        expected = np.full(len(train), -np.inf)
        for j, t in enumerate(train):
            union = (q != 0).any(0) | (t != 0).any(0)  # pixels foreground in either image
            a, b = q[:, union].ravel().astype(float), t[:, union].ravel().astype(float)
            if a.std() > 0 and b.std() > 0:
                expected[j] = pearsonr(a, b)[0]
        order = np.lexsort((np.arange(len(train)), -expected))[:4]
        finite = np.isfinite(expected[order])
        np.testing.assert_allclose(out["r"][i][finite], expected[order][finite], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(out["index"][i][finite], order[finite])
    assert out["index"][0, 0] == 3 and out["r"][0, 0] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(out["r"][-1]).all() and (out["index"][-1] == -1).all()  # empty query: undefined


def test_foreground_ignores_shared_background():
    """Two unrelated images on a large shared zero background: whole-image r is high, foreground r is not."""
    rng = np.random.default_rng(6)
    a = np.zeros((1, 1, 32, 32), np.uint8)
    b = np.zeros((2, 1, 32, 32), np.uint8)
    a[0, 0, 12:20, 12:20] = rng.integers(100, 255, (8, 8))
    b[0, 0, 12:20, 12:20] = rng.integers(100, 255, (8, 8))
    b[1, 0, 14:22, 10:18] = rng.integers(1, 255, (8, 8))
    whole = pearsonr(a.ravel().astype(float), b[0].ravel().astype(float))[0]
    fg = foreground_correlation(b, a, top_k=2, progress=False)
    assert whole > 0.85 and abs(fg["r"][0, 0]) < 0.5
