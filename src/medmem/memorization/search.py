"""Exact highest Pearson correlation of every query image against every training image.

The study's measure: Pearson r over all H×W pixels of one channel (background included), maximised
over the training set. Two combined views are added: `mr_mean` (r averaged over the MR channels,
maximised over training images) and `all` (r of all channels concatenated).

Method (exact, fast, memory bounded by the block sizes):
1. Integer statistics per image and channel: S1 = Σx, S2 = Σx², V = D·S2 − S1² (exact in int64;
   V = 0 marks a constant image, whose r is undefined: NaN, as scipy.stats.pearsonr gives).
2. Screen: z-normalised float32 vectors (computed in float64, then rounded), blocked matrix
   products with the pixel dimension split in chunks whose results are summed in float64, and a
   running top-K' per query. The screen's worst-case error ε (Higham's γ_n bound for the chunk
   length, plus input rounding) is stated in the output.
3. Exact re-score: every candidate whose screen value lies within 2ε of the k-th best. Dot products
   of uint8 images are exact in float64 (integers below 2^53), so r comes from exact integers. If a
   query's candidate list may have missed one (too many training images within 2ε), that query is
   re-scored against the whole training set in float64. The result equals a brute-force float64
   search, ties going to the lowest training index.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

EXACT_CHUNK = 256  # 256 products of 8-bit values sum below 2^24: exact in float32, in any order
UNIT_ROUNDOFF = {"float32": 2.0**-24, "tf32": 2.0**-10}  # tf32: 10-bit mantissa, any rounding mode


@dataclass
class SearchResult:
    """The top-k matches of M queries in every view.

    r: per view (M, k) float64 Pearson r in [-1, 1], best first, NaN where undefined (a constant
    query, or fewer than k non-constant training images); index: per view (M, k) int64 training
    index, −1 where undefined. constant_queries / constant_train: per view, the number of constant
    images (r undefined; constant training images are never matched). epsilon: the screen's
    worst-case error (`screen_epsilon`); fallbacks: query rows re-scored against the whole training
    set; details: the settings (precision, device, chunk, candidates_kept) for the table's metadata.
    """

    views: list[str]  # "0", "1", ... per channel, then "mr_mean" (when MR channels are given) and "all"
    r: dict[str, np.ndarray]  # view -> (M, k) float64, best first; NaN where undefined
    index: dict[str, np.ndarray]  # view -> (M, k) int64 training index; -1 where undefined
    constant_queries: dict[str, int]
    constant_train: dict[str, int]
    epsilon: float
    fallbacks: int = 0
    details: dict = field(default_factory=dict)


def screen_epsilon(precision: str, chunk: int) -> float:
    """Worst-case |screen - r| for unit vectors: input rounding plus γ_chunk accumulation.

    precision: "float32" (unit roundoff 2^-24) or "tf32" (2^-10, inputs only); chunk: products summed
    in float32 before the float64 sum. γ_n = n·u / (1 − n·u): Higham, Accuracy and Stability of
    Numerical Algorithms (2nd ed., 2002), §3.1, Lemma 3.1. Returns ε > 0.
    """
    u32 = UNIT_ROUNDOFF["float32"]
    u_in = UNIT_ROUNDOFF[precision]
    accumulate = chunk * u32 / (1 - chunk * u32)
    return 2 * u_in + u_in**2 + 10 * u32 + accumulate + 1e-9


class _Images:
    """uint8 (N, C, D) images (memory-mapped or in memory) and their exact integer statistics.

    The statistics are filled in as blocks are first loaded, from the same float32 conversion.
    """

    def __init__(self, array: np.ndarray):
        self.array = array.reshape(array.shape[0], array.shape[1], -1)
        self.n, self.channels, self.pixels = self.array.shape
        self.s1 = np.zeros((self.n, self.channels), np.int64)
        self.s2 = np.zeros((self.n, self.channels), np.int64)
        self._known = np.zeros(self.n, bool)
        self.kept: torch.Tensor | None = None  # uint8 copy on the search device, filled by load(keep=True)

    def load(self, start: int, stop: int, buffers: _Buffers, name: str, keep: bool = False) -> torch.Tensor:
        """float32 (exact integers) images start..stop in a reused buffer, recording their statistics."""
        with warnings.catch_warnings():  # a read-only memory map: torch warns, we only read it
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.from_numpy(np.ascontiguousarray(self.array[start:stop]))
        if keep:
            raw = self.kept[start:stop].copy_(raw)
        x = buffers.get(name, raw.shape)
        x.copy_(raw)
        if not self._known[start:stop].all():
            square = torch.mul(x, x, out=buffers.get("square", x.shape))
            self.s1[start:stop], self.s2[start:stop] = _exact_sum(x), _exact_sum(square)
            self._known[start:stop] = True
        return x

    def rows(self, index: np.ndarray, device) -> torch.Tensor:
        """uint8 images by index on `device`: from the kept copy, else read from the (mapped) array."""
        if self.kept is not None:
            return self.kept.index_select(0, torch.from_numpy(index).to(self.kept.device))
        return torch.from_numpy(np.asarray(self.array[index])).to(device)  # a memmap reads only these rows

    @property
    def var(self) -> np.ndarray:
        """D·Σx² − (Σx)² per image and channel, exact; 0 for a constant image."""
        return self.pixels * self.s2 - self.s1 * self.s1

    @property
    def s1_all(self) -> np.ndarray:
        return self.s1.sum(1)

    @property
    def var_all(self) -> np.ndarray:
        return self.pixels * self.channels * self.s2.sum(1) - self.s1_all * self.s1_all


class _Buffers:
    """Named scratch tensors reused across blocks: fresh large allocations cost page faults."""

    def __init__(self, device):
        self.device = device
        self.store: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, dtype=torch.float32) -> torch.Tensor:
        n = math.prod(shape)
        buf = self.store.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = self.store[name] = torch.empty(n, dtype=dtype, device=self.device)
        return buf[:n].view(*shape)


def _exact_sum(x: torch.Tensor) -> np.ndarray:
    """Sum over the last axis of integer-valued float32 (< 2^16): exact through 256-element chunks."""
    pad = (-x.shape[-1]) % EXACT_CHUNK
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.view(*x.shape[:-1], -1, EXACT_CHUNK).sum(-1).to(torch.float64).sum(-1).to(torch.int64).cpu().numpy()


def _normalise(x: torch.Tensor, s1: torch.Tensor, var: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """z = (x − mean) / ||x − mean|| per image and channel in float32 (mean and scale from exact sums).

    Each z_i is within 4u of its exact value; the mean's own rounding adds a term of order u²(mean/σ)²
    to a screen value, below 1e-9 for 8-bit images (both are covered by `screen_epsilon`).
    """
    pixels = x.shape[-1]
    mean = (s1.to(torch.float64) / pixels).to(torch.float32)
    norm = torch.sqrt(var.to(torch.float64) / pixels)
    inv = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-300), torch.zeros_like(norm)).to(torch.float32)
    return torch.sub(x, mean[..., None], out=out).mul_(inv[..., None])


def _screen_products(zq: torch.Tensor, zt: torch.Tensor, chunk: int, part: torch.Tensor,
                     tf32: bool = False) -> torch.Tensor:
    """(bq, bt) float64 sums of float32 chunk products: the error bound needs fresh chunk sums.

    TF32 (CUDA) is switched on for these products only, and the caller's setting restored.
    """
    out = torch.zeros(zq.shape[0], zt.shape[0], dtype=torch.float64, device=zq.device)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for d in range(0, zq.shape[1], chunk):
            out.add_(torch.mm(zq[:, d:d + chunk], zt[:, d:d + chunk].T, out=part))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return out


class _ViewDefs:
    def __init__(self, channels: int, mr_channels):
        self.channels = channels
        self.mr = list(mr_channels or [])
        self.names = [str(c) for c in range(channels)] + (["mr_mean"] if self.mr else []) + ["all"]


def _view_scores(s: list[torch.Tensor], q, t, qi: slice, ti: slice, views: _ViewDefs, device) -> list[torch.Tensor]:
    """Screen score of every view from per-channel screens; excluded (constant) training images get -inf."""
    out = []
    t_const = torch.from_numpy(t.var[ti] == 0).to(device)  # (bt, C)
    for c in range(views.channels):
        out.append(s[c].masked_fill(t_const[None, :, c], -math.inf))
    if views.mr:
        mr = sum(s[c] for c in views.mr) / len(views.mr)
        out.append(mr.masked_fill(t_const[:, views.mr].any(1)[None, :], -math.inf))
    if views.channels == 1:  # one channel: the concatenation is that channel
        out.append(out[0])
        return out
    # all channels concatenated, from the per-channel screens (see module doc):
    # r_all = (C·Σ_c s_c·sqrt(Vq_c·Vt_c) + K) / sqrt(Vq_all·Vt_all), K = C·Σ_c S1q_c·S1t_c − S1q_all·S1t_all
    C = views.channels
    aq = torch.from_numpy(q.s1[qi]).to(device)
    at = torch.from_numpy(t.s1[ti]).to(device)
    k = C * sum(aq[:, c, None] * at[None, :, c] for c in range(C))
    k = k - torch.from_numpy(q.s1_all[qi]).to(device)[:, None] * torch.from_numpy(t.s1_all[ti]).to(device)[None, :]
    sq = torch.sqrt(torch.from_numpy(q.var[qi]).to(device, torch.float64))
    st = torch.sqrt(torch.from_numpy(t.var[ti]).to(device, torch.float64))
    num = C * sum(s[c] * (sq[:, c, None] * st[None, :, c]) for c in range(C)) + k.to(torch.float64)
    den = torch.sqrt(torch.from_numpy(q.var_all[qi]).to(device, torch.float64)[:, None]
                     * torch.from_numpy(t.var_all[ti]).to(device, torch.float64)[None, :])
    r_all = num / den.clamp_min(1e-300)
    out.append(r_all.masked_fill(den == 0, -math.inf))
    return out


def _exact_views(sxy: np.ndarray, q, t, qi: np.ndarray, ti: np.ndarray, views: _ViewDefs) -> np.ndarray:
    """Exact r for query/training pairs from exact Σxy (pairs, C): returns (pairs, n_views)."""
    D = q.pixels
    C = views.channels
    sxy = np.rint(sxy).astype(np.int64)
    num = D * sxy - q.s1[qi] * t.s1[ti]
    den = np.sqrt(q.var[qi].astype(np.float64) * t.var[ti].astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
        cols = [r[:, c] for c in range(C)]
        if views.mr:
            cols.append(r[:, views.mr].mean(axis=1))
        num_all = D * C * sxy.sum(1) - q.s1_all[qi] * t.s1_all[ti]
        den_all = np.sqrt(q.var_all[qi].astype(np.float64) * t.var_all[ti].astype(np.float64))
        cols.append(np.where(den_all > 0, num_all / np.where(den_all > 0, den_all, 1), np.nan))
    return np.stack(cols, axis=1)


def _exact_products(xq: torch.Tensor, t: _Images, pair_q: np.ndarray, pair_t: np.ndarray,
                    slab_bytes: int) -> np.ndarray:
    """Exact Σxy per channel for pairs (row of xq, training image), pairs sorted by query.

    Products of 8-bit values summed in float64 are integers below 2^53 for D < 2^37 pixels: exact in
    any summation order. Training rows are gathered as uint8 straight from the (mapped) array, a slab
    of pairs at a time: cache-sized on the CPU, one large transfer per slab on a GPU.
    """
    C, D = xq.shape[1], xq.shape[2]
    out = np.empty((len(pair_q), C), np.float64)
    per_slab = max(1, slab_bytes // (C * D * 8))
    ends = np.r_[np.flatnonzero(np.diff(pair_q)) + 1, len(pair_q)]  # where each query's pairs end
    p0 = 0
    while p0 < len(pair_q):
        fit = ends[np.searchsorted(ends, p0 + per_slab, side="right") - 1]  # whole queries only
        p1 = int(fit if fit > p0 else ends[np.searchsorted(ends, p0, side="right")])
        b = t.rows(pair_t[p0:p1], xq.device).to(torch.float64)
        if pair_q[p0] == pair_q[p1 - 1]:  # one query: its row is converted once, not per pair
            sxy = torch.einsum("pcd,cd->pc", b, xq[int(pair_q[p0])].to(torch.float64))
        else:
            rows = torch.from_numpy(pair_q[p0:p1]).to(xq.device)
            sxy = torch.einsum("pcd,pcd->pc", b, xq.index_select(0, rows).to(torch.float64))
        out[p0:p1] = sxy.cpu().numpy()
        p0 = p1
    return out


def highest_correlation(train: np.ndarray, queries: np.ndarray, *, top_k: int = 5, mr_channels=None,
                        device: str = "cpu", precision: str = "float32", block_queries: int = 256,
                        block_train: int = 1024, chunk: int = 16384, margin: int = 32,
                        cache_gb: float = 4.0, progress: bool = True) -> SearchResult:
    """Top-k training matches per query, channel and combined view (see the module doc).

    train: (N, C, H, W) uint8, queries: (M, C, H, W) uint8 (numpy arrays or memory maps). top_k:
    matches kept per query (at most N). mr_channels: channel indices averaged in the `mr_mean` view
    (None or empty: no such view). device: "cpu" or "cuda"; precision of the screen: "float32", or
    "tf32" on CUDA. block_queries, block_train: images per
    block of the screen; chunk: pixels per float32 partial sum (ε grows with it); margin: extra
    candidates kept per query beyond k; cache_gb: GB of normalised training images kept on the device
    between query blocks. Returns a `SearchResult` equal to a brute-force float64 search (ties: lowest
    training index). Raises ValueError for arrays that are not 4-D, differing C×H×W, an unknown
    precision, tf32 on the CPU, or no images.
    """
    if train.ndim != 4 or queries.ndim != 4:
        raise ValueError("train and queries must be N×C×H×W")
    if train.shape[1:] != queries.shape[1:]:
        raise ValueError(f"query images {queries.shape[1:]} do not match training images {train.shape[1:]}")
    if precision not in UNIT_ROUNDOFF:
        raise ValueError(f"precision must be one of {sorted(UNIT_ROUNDOFF)}")
    dev = torch.device(device)
    if dev.type != "cuda" and precision != "float32":
        raise ValueError("on the CPU the screen runs in float32 (bf16/tf32 are not native there)")
    t = _Images(train)
    q = _Images(queries)
    if q.n == 0 or t.n == 0:
        raise ValueError("no query or no training images")
    views = _ViewDefs(t.channels, mr_channels)
    V = len(views.names)
    k = min(top_k, t.n)
    keep = min(t.n, k + margin)
    eps = screen_epsilon(precision, chunk)
    r_out = np.full((V, q.n, top_k), np.nan)
    i_out = np.full((V, q.n, top_k), -1, np.int64)
    fallbacks = 0

    t_blocks = [(s, min(s + block_train, t.n)) for s in range(0, t.n, block_train)]
    # normalised float32 training images, and their uint8 originals for the re-score (no host reads)
    cache_fits = t.n * t.channels * t.pixels * 5 <= cache_gb * 2**30
    buffers = _Buffers(dev)
    z_train = torch.empty((t.n, t.channels, t.pixels), device=dev) if cache_fits else None
    if cache_fits:
        t.kept = torch.empty((t.n, t.channels, t.pixels), dtype=torch.uint8, device=dev)
    normalised = np.zeros(len(t_blocks), bool)

    def train_block(b):
        start, stop = t_blocks[b]
        if normalised[b]:
            return z_train[start:stop]
        x = t.load(start, stop, buffers, "train", keep=cache_fits)
        out = z_train[start:stop] if cache_fits else buffers.get("z_train", x.shape)
        z = _normalise(x, torch.from_numpy(t.s1[start:stop]).to(dev), torch.from_numpy(t.var[start:stop]).to(dev), out)
        normalised[b] = cache_fits
        return z

    bar = tqdm(total=math.ceil(q.n / block_queries) * len(t_blocks), unit="block", desc="memorization",
               disable=not progress)
    for q0 in range(0, q.n, block_queries):
        q1 = min(q0 + block_queries, q.n)
        bq = q1 - q0
        xq = q.load(q0, q1, buffers, "queries")  # float32, kept for the exact re-score
        zq = _normalise(xq, torch.from_numpy(q.s1[q0:q1]).to(dev), torch.from_numpy(q.var[q0:q1]).to(dev),
                        buffers.get("z_queries", xq.shape))
        best_s = torch.full((V, bq, keep), -math.inf, dtype=torch.float64, device=dev)
        best_i = torch.full((V, bq, keep), -1, dtype=torch.int64, device=dev)
        for b, (t0, t1) in enumerate(t_blocks):
            zt = train_block(b)
            part = buffers.get("part", (bq, t1 - t0))
            s = [_screen_products(zq[:, c], zt[:, c], chunk, part, precision == "tf32") for c in range(t.channels)]
            scores = _view_scores(s, q, t, slice(q0, q1), slice(t0, t1), views, dev)
            idx = torch.arange(t0, t1, device=dev).expand(bq, -1)
            for v, sv in enumerate(scores):
                same = next((u for u in range(v) if scores[u] is sv), None)
                if same is not None:  # one channel: the concatenation is that channel, already ranked
                    best_s[v], best_i[v] = best_s[same], best_i[same]
                    continue
                merged_s = torch.cat([best_s[v], sv], dim=1)
                merged_i = torch.cat([best_i[v], idx], dim=1)
                top = torch.topk(merged_s, keep, dim=1)
                best_s[v], best_i[v] = top.values, torch.gather(merged_i, 1, top.indices)
            bar.update(1)
        r_blk, i_blk, n_fb = _rescore_block(best_s.cpu().numpy(), best_i.cpu().numpy(), xq, q, t, q0, views,
                                            k, top_k, eps, dev, _constant(q, q0, q1, views))
        r_out[:, q0:q1], i_out[:, q0:q1] = r_blk, i_blk
        fallbacks += n_fb
    bar.close()

    const_q, const_t = _constant(q, 0, q.n, views), _constant(t, 0, t.n, views)
    for v in range(V):
        r_out[v, const_q[v]], i_out[v, const_q[v]] = np.nan, -1
    if fallbacks:
        log.info("%d query block row(s) were re-scored against the whole training set", fallbacks)
    return SearchResult(views.names, {n: r_out[v] for v, n in enumerate(views.names)},
                        {n: i_out[v] for v, n in enumerate(views.names)},
                        {n: int(const_q[v].sum()) for v, n in enumerate(views.names)},
                        {n: int(const_t[v].sum()) for v, n in enumerate(views.names)}, eps, fallbacks,
                        {"precision": precision, "device": str(dev), "chunk": chunk, "candidates_kept": keep})


def _constant(images, start, stop, views) -> np.ndarray:
    """(V, n): the image is constant in that view, so its r is undefined (a query needs no search)."""
    var = images.var[start:stop]
    rows = [var[:, c] == 0 for c in range(views.channels)]
    if views.mr:
        rows.append((var[:, views.mr] == 0).any(1))
    rows.append(images.var_all[start:stop] == 0)
    return np.stack(rows)


def _rescore_block(best_s, best_i, xq, q, t, q0, views, k, top_k, eps, dev, constant):
    """Exact r for the screen's candidates; exhaustive float64 search where the screen cannot vouch.

    A training image whose screen value is below (k-th best) − 2ε has r < true k-th best: it is
    dropped. If the whole kept list lies within 2ε of the k-th best, one beyond it might not be.
    """
    V, bq, keep = best_s.shape
    kth = best_s[:, :, k - 1]
    has_k = np.isfinite(kth)
    chosen = np.where(has_k[..., None], best_s >= kth[..., None] - 2 * eps, np.isfinite(best_s))
    chosen &= ~constant[..., None]
    exhaustive = np.zeros(bq, bool)
    if keep < t.n:
        exhaustive = (has_k & ~constant & (best_s[:, :, -1] >= kth - 2 * eps)).any(0)
    chosen &= ~exhaustive[None, :, None]

    v_idx, rows, slots = np.nonzero(chosen)
    js = best_i[v_idx, rows, slots]
    pair_key, inverse = np.unique(rows * t.n + js, return_inverse=True)  # sorted by query row
    pair_q, pair_t = pair_key // t.n, pair_key % t.n
    slab = 2**30 if dev.type == "cuda" else 2**22
    sxy = _exact_products(xq, t, pair_q, pair_t, slab)
    r = _exact_views(sxy, q, t, q0 + pair_q, pair_t, views)[inverse.reshape(-1), v_idx]

    r_blk = np.full((V, bq, top_k), np.nan)
    i_blk = np.full((V, bq, top_k), -1, np.int64)
    ok = np.isfinite(r)
    v_idx, rows, js, r = v_idx[ok], rows[ok], js[ok], r[ok]
    order = np.lexsort((js, -r, rows, v_idx))  # per view and query: highest r first, ties to the lowest index
    v_idx, rows, js, r = v_idx[order], rows[order], js[order], r[order]
    group = v_idx * bq + rows
    first = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    rank = np.arange(len(group)) - np.repeat(first, np.diff(np.r_[first, len(group)]))
    top = rank < top_k
    r_blk[v_idx[top], rows[top], rank[top]] = r[top]
    i_blk[v_idx[top], rows[top], rank[top]] = js[top]

    rows_fb = np.flatnonzero(exhaustive)
    if len(rows_fb):
        r_fb, i_fb = _exhaustive(xq[torch.from_numpy(rows_fb).to(dev)], q, t, q0 + rows_fb, views, top_k, dev)
        r_blk[:, rows_fb], i_blk[:, rows_fb] = r_fb, i_fb
    return r_blk, i_blk, len(rows_fb)


def _merge_top(r_top, i_top, r_new, i_new):
    """Keep the best top_k of both along the last axis: highest r first, ties to the lowest index, NaN last."""
    r = np.concatenate([r_top, r_new], -1)
    i = np.concatenate([i_top, i_new], -1)
    order = np.lexsort((i, np.where(np.isfinite(r), -r, np.inf)), axis=-1)[..., : r_top.shape[-1]]
    r, i = np.take_along_axis(r, order, -1), np.take_along_axis(i, order, -1)
    i[~np.isfinite(r)] = -1
    return r, i


def _exhaustive(xq_rows, q, t, q_index, views, top_k, dev, block: int = 256):
    """Exact float64 search of some queries against the whole training set, a training block at a time."""
    V = len(views.names)
    n = len(q_index)
    r = np.full((V, n, top_k), np.nan)
    idx = np.full((V, n, top_k), -1, np.int64)
    xq64 = xq_rows.to(torch.float64)
    for t0 in range(0, t.n, block):
        t1 = min(t0 + block, t.n)
        xt = t.rows(np.arange(t0, t1), dev).to(torch.float64)
        sxy = torch.einsum("qcd,tcd->qtc", xq64, xt).cpu().numpy().reshape(-1, t.channels)
        qi = np.repeat(q_index, t1 - t0)
        ti = np.tile(np.arange(t0, t1), n)
        r_blk = _exact_views(sxy, q, t, qi, ti, views).T.reshape(V, n, t1 - t0)
        r, idx = _merge_top(r, idx, r_blk, np.broadcast_to(np.arange(t0, t1), r_blk.shape))
    return r, idx
