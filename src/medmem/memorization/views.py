"""Views beside the study's measure that catch the copies it misses (issue 16).

- `shift`: the highest Pearson r (all channels concatenated, as the `all` view) over integer
  translations of the *query* by up to ±s pixels in each direction, with zero fill: the shifted
  query is a full H×W image whose uncovered border is 0, and r is taken over all H×W pixels of it,
  exactly as the study's measure would score that image. The winning translation (dy, dx) is the one
  that, applied to the query, best matches the training image (a copy moved down-right by one pixel
  is matched at (−1, −1)).
- `flip`: the same over the query and its left-right mirror image (each translated), so a mirrored
  copy is matched; `flipped` says which won.
- `foreground`: Pearson r over the pixels that are foreground in either image. A pixel is foreground
  when any channel is non-zero (threshold: value > 0 of 8 bits; for BraTS, whose background is
  exactly 0 after skull stripping, this is the brain). All channels of the foreground pixels are
  concatenated (n = C·|union| values). Background pixels of both images then no longer drive r.

Exactness. `shift`/`flip` search every translated (and mirrored) query with
`search.highest_correlation` (float32 screen with stated bound, exact float64 re-score): each
translated query is an exact search, and the top-k of the maximum over translations is the top-k of
the merged per-translation top-k lists (a training image in the true top-k is in the top-k of its
own best translation). Cost: (2s+1)² whole-image searches (twice that with flip).

`foreground` needs no screen: because background pixels are 0 in an 8-bit image, the masked sums
are plain sums (Σ_U x = Σ x, Σ_U x² = Σ x², Σ_U xy = Σ xy) except the count
|U| = D − (1−m_q)·(1−m_t), a product of the background masks. Σxy is an exact integer from
float32 products of 256-pixel chunks (256·255² < 2^24) summed in float64, the count is exact in
float32 (0/1 products, D < 2^24), so r is computed from exact integers in float64 for every pair:
two matrix products per block (C·D and D long), against C products of length D for the study's
measure.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from medmem.memorization.search import EXACT_CHUNK, _merge_top, highest_correlation
from medmem.memorization.shifts import translate, translations, variants  # noqa: F401 (re-exported)


def shift_flip_correlation(train: np.ndarray, queries: np.ndarray, *, shift: int = 2, flip: bool = True,
                           top_k: int = 5, mr_channels=None, device: str = "cpu", precision: str = "float32",
                           block_queries: int = 256, progress: bool = True, **search_kwargs) -> dict:
    """Exact top-k of the highest r over translations (view `shift`) and also mirror images (`flip`).

    train: uint8 (N, C, H, W); queries: uint8 (M, C, H, W); shift >= 0 pixels.
    Returns {view: {"r": (M, k) float64 (NaN undefined), "index": (M, k) int64 (−1 undefined),
    "dy", "dx": (M, k) int64 translation applied to the query, "flipped": (M, k) bool}} for views
    "shift" and (if flip) "flip". r is the `all` view's (all channels concatenated). Ties: highest r,
    then lowest training index; for one training image, the first variant of `variants` wins.
    """
    if shift < 0:
        raise ValueError(f"shift must be >= 0, got {shift}")
    var = variants(shift, flip)
    n_var = len(var)
    n_plain = len(translations(shift))
    M = len(queries)
    k = top_k
    out = {name: {"r": np.full((M, k), np.nan), "index": np.full((M, k), -1, np.int64),
                  "dy": np.zeros((M, k), np.int64), "dx": np.zeros((M, k), np.int64),
                  "flipped": np.zeros((M, k), bool)} for name in (["shift", "flip"] if flip else ["shift"])}
    per_call = max(1, block_queries // n_var) * 4
    bar = tqdm(total=M, unit="query", desc=f"shift ±{shift}{' + flip' if flip else ''}", disable=not progress)
    for q0 in range(0, M, per_call):
        q1 = min(q0 + per_call, M)
        original = np.asarray(queries[q0:q1])
        mirrored = original[..., ::-1]
        expanded = np.stack([translate(mirrored if m else original, dy, dx) for m, dy, dx in var], axis=1)
        expanded = expanded.reshape(-1, *original.shape[1:])
        result = highest_correlation(train, expanded, top_k=k, mr_channels=mr_channels, device=device,
                                     precision=precision, block_queries=block_queries, progress=False,
                                     **search_kwargs)
        r = result.r["all"].reshape(q1 - q0, n_var, k)
        idx = result.index["all"].reshape(q1 - q0, n_var, k)
        for name, nv in (("shift", n_plain), ("flip", n_var)):
            if name in out:
                _reduce(r[:, :nv], idx[:, :nv], var[:nv], out[name], q0)
        bar.update(q1 - q0)
    bar.close()
    return out


def _reduce(r: np.ndarray, idx: np.ndarray, var, out: dict, q0: int) -> None:
    """Per query: best r per training image over variants, then the top k (ties to the lowest index)."""
    n, nv, k = r.shape
    variant = np.broadcast_to(np.arange(nv)[None, :, None], r.shape)
    for i in range(n):
        rr, ii, vv = r[i].ravel(), idx[i].ravel(), variant[i].ravel()
        ok = ii >= 0
        rr, ii, vv = rr[ok], ii[ok], vv[ok]
        order = np.lexsort((vv, -rr, ii))  # per training image: highest r, first variant
        rr, ii, vv = rr[order], ii[order], vv[order]
        first = np.r_[True, ii[1:] != ii[:-1]]
        rr, ii, vv = rr[first], ii[first], vv[first]
        order = np.lexsort((ii, -rr))[:k]
        for slot, j in enumerate(order):
            m, dy, dx = var[vv[j]]
            out["r"][q0 + i, slot], out["index"][q0 + i, slot] = rr[j], ii[j]
            out["dy"][q0 + i, slot], out["dx"][q0 + i, slot], out["flipped"][q0 + i, slot] = dy, dx, m


def foreground_correlation(train: np.ndarray, queries: np.ndarray, *, top_k: int = 5, device: str = "cpu",
                           block_queries: int = 256, block_train: int = 1024, margin: int = 32,
                           progress: bool = True) -> dict:
    """Exact top-k Pearson r over the union of both images' foreground pixels (see the module doc).

    train: uint8 (N, C, H, W); queries: uint8 (M, C, H, W). Returns {"r": (M, k) float64 (NaN where
    undefined: no training image has a non-constant union with the query), "index": (M, k) int64}.
    Ties go to the lowest training index (among the best k + margin of each training block).
    """
    if train.ndim != 4 or queries.ndim != 4 or train.shape[1:] != queries.shape[1:]:
        raise ValueError("train and queries must be N×C×H×W of the same image shape")
    dev = torch.device(device)
    N, C = train.shape[:2]
    D = int(np.prod(train.shape[2:]))
    M = len(queries)
    k = top_k

    def prepare(array, a, b):
        x = torch.from_numpy(np.ascontiguousarray(array[a:b])).to(dev).reshape(b - a, C, D)
        background = (x == 0).all(1).to(torch.float32)  # (n, D): 1 where every channel is 0
        xf = x.reshape(b - a, C * D).to(torch.float32)
        s1 = xf.to(torch.float64).sum(1).to(torch.int64)
        s2 = (xf.to(torch.float64) ** 2).sum(1).to(torch.int64)
        return xf, background, s1, s2

    r_out = np.full((M, k), np.nan)
    i_out = np.full((M, k), -1, np.int64)
    t_blocks = [(s, min(s + block_train, N)) for s in range(0, N, block_train)]
    cache = {} if N * C * D * 4 <= 2**32 else None
    bar = tqdm(total=math.ceil(M / block_queries) * len(t_blocks), unit="block", desc="foreground",
               disable=not progress)
    for q0 in range(0, M, block_queries):
        q1 = min(q0 + block_queries, M)
        xq, bq, sq1, sq2 = prepare(queries, q0, q1)
        best_r, best_i = np.full((q1 - q0, k), np.nan), np.full((q1 - q0, k), -1, np.int64)
        for t0, t1 in t_blocks:
            if cache is not None and t0 in cache:
                xt, bt, st1, st2 = cache[t0]
            else:
                xt, bt, st1, st2 = prepare(train, t0, t1)
                if cache is not None:
                    cache[t0] = (xt, bt, st1, st2)
            sxy = _exact_dot(xq, xt)
            both_bg = _exact_dot(bq, bt, chunk=2**24).to(torch.int64)
            n = C * (D - both_bg)
            num = n * sxy - sq1[:, None] * st1[None, :]
            vq = n * sq2[:, None] - sq1[:, None] ** 2
            vt = n * st2[None, :] - st1[None, :] ** 2
            den = torch.sqrt(vq.to(torch.float64) * vt.to(torch.float64))
            r = torch.where(den > 0, num.to(torch.float64) / den.clamp_min(1e-300),
                            torch.full_like(den, -math.inf))
            keep = min(t1 - t0, k + margin)
            top = torch.topk(r, keep, dim=1)
            rv = top.values.cpu().numpy()
            iv = (top.indices + t0).cpu().numpy()
            rv[~np.isfinite(rv)] = np.nan
            iv[~np.isfinite(rv)] = -1
            best_r, best_i = _merge_top(best_r, best_i, rv, iv)
            bar.update(1)
        r_out[q0:q1], i_out[q0:q1] = best_r, best_i
    bar.close()
    return {"r": r_out, "index": i_out}


def _exact_dot(a: torch.Tensor, b: torch.Tensor, chunk: int = EXACT_CHUNK) -> torch.Tensor:
    """a @ b.T for integer-valued float32 rows, exact: float32 products over chunks whose sums stay
    below 2^24 (256 pixels of 8-bit products; 2^24 of 0/1 products), summed in float64; int64 out."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    part = torch.empty(a.shape[0], b.shape[0], dtype=torch.float32, device=a.device)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would round the 8-bit inputs' products
    try:
        for d in range(0, a.shape[1], chunk):
            out.add_(torch.mm(a[:, d:d + chunk], b[:, d:d + chunk].T, out=part))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return out.to(torch.int64)
