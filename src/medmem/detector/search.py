"""Exact top-k cosine similarity of query embeddings against training embeddings.

The same engine as the highest-correlation search: unit vectors (normalised in float64, rounded to
float32), blocked float32 matrix products with a running top-(k + margin) per query, the screen's
worst-case error ε (`search.screen_epsilon` for the embedding length), then an exact float64 re-score
of every candidate within 2ε of the k-th best, and a float64 search of the whole training set for a
query whose kept list may have missed one. The result equals a float64 brute-force search of the
embeddings, ties going to the lowest training index.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medmem.memorization.search import _merge_top, screen_epsilon


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0.0)


def cosine_topk(train: np.ndarray, queries: np.ndarray, *, top_k: int = 5, device: str = "cpu",
                block_queries: int = 4096, block_train: int = 16384, margin: int = 32) -> dict:
    """train: (N, d), queries: (M, d) float embeddings. Returns {"r": (M, k) float64 cosine similarity,
    best first (NaN where undefined: a zero embedding), "index": (M, k) int64 (−1 undefined),
    "epsilon": the screen's bound}."""
    if train.ndim != 2 or queries.ndim != 2 or train.shape[1] != queries.shape[1]:
        raise ValueError("train and queries must be (N, d) and (M, d) embeddings of one length")
    dev = torch.device(device)
    t64, q64 = _unit(train), _unit(queries)
    N, M = len(t64), len(q64)
    k = min(top_k, N)
    keep = min(N, k + margin)
    eps = screen_epsilon("float32", train.shape[1])
    t_zero = ~np.any(t64 != 0, axis=1)
    zt = torch.from_numpy(t64.astype(np.float32)).to(dev)
    r_out = np.full((M, top_k), np.nan)
    i_out = np.full((M, top_k), -1, np.int64)
    for q0 in range(0, M, block_queries):
        q1 = min(q0 + block_queries, M)
        zq = torch.from_numpy(q64[q0:q1].astype(np.float32)).to(dev)
        best_s = torch.full((q1 - q0, keep), -math.inf, dtype=torch.float64, device=dev)
        best_i = torch.full((q1 - q0, keep), -1, dtype=torch.int64, device=dev)
        for t0 in range(0, N, block_train):
            t1 = min(t0 + block_train, N)
            s = (zq @ zt[t0:t1].T).to(torch.float64)
            s[:, torch.from_numpy(t_zero[t0:t1]).to(dev)] = -math.inf
            merged_s = torch.cat([best_s, s], 1)
            merged_i = torch.cat([best_i, torch.arange(t0, t1, device=dev).expand(q1 - q0, -1)], 1)
            top = torch.topk(merged_s, keep, dim=1)
            best_s, best_i = top.values, torch.gather(merged_i, 1, top.indices)
        bs, bi = best_s.cpu().numpy(), best_i.cpu().numpy()
        kth = bs[:, k - 1]
        for row in range(q1 - q0):
            qi = q0 + row
            if not np.any(q64[qi]) or not np.isfinite(kth[row]):
                continue
            if keep < N and bs[row, -1] >= kth[row] - 2 * eps:  # the kept list cannot vouch: all of them
                cand = np.flatnonzero(~t_zero)
            else:
                cand = bi[row][(bs[row] >= kth[row] - 2 * eps) & (bi[row] >= 0)]
            exact = t64[cand] @ q64[qi]
            r, i = _merge_top(np.full(top_k, np.nan), np.full(top_k, -1, np.int64), exact, cand)
            r_out[qi], i_out[qi] = r, i
    return {"r": r_out, "index": i_out, "epsilon": eps}
