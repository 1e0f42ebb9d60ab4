"""The memorization table: one row per query and view, written as Parquet with the run's facts.

Columns: `query` (int64, the query image's index in the whole query set), `view` (str: "0", "1", ...
for one channel; "mr_mean", "all"; the added views "shift", "flip", "foreground", "detector"),
`channel_name` (str: the channel's name for a one-channel view, e.g. "t1", else the view's name),
`r_max` (float64 Pearson r in [-1, 1], NaN where undefined; cosine similarity for "detector"),
`train_index` (int64, −1 where none), `subject` (str or None), `slice` (Int64, NA where none),
`topk_r`, `topk_index` (lists, best first); `shift_y`, `shift_x` (Int64), `flipped` (boolean) for the
shift and flip views. Tables written before views were called views (column `channel`) are refused
by `read_table` with a message to rerun.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medmem.errors import InputError
from medmem.io import atomic_output
if TYPE_CHECKING:  # the report reads tables without torch
    from medmem.memorization.search import SearchResult

META_KEY = b"medmem"
OLD_VIEW_COLUMN = "channel"  # the views' column before it was named `view`


def require_view_column(table: pd.DataFrame, path) -> pd.DataFrame:
    """`table` unchanged; InputError naming `path` when it holds views in the old column `channel`
    (written by an older medmem) instead of `view`."""
    if "view" not in table.columns and OLD_VIEW_COLUMN in table.columns:
        raise InputError(f"{path}: written by an older medmem (views in column '{OLD_VIEW_COLUMN}', now 'view'); "
                         "rerun the step that wrote it")
    return table


def _matched_slices(best: np.ndarray, train_rows: pd.DataFrame) -> tuple[np.ndarray, pd.arrays.IntegerArray]:
    """Subject (object, None where unmatched) and slice (Int64, NA) of each best training index (−1: none)."""
    found = best >= 0
    subject = np.full(len(best), None, object)
    slice_ = pd.array([pd.NA] * len(best), dtype="Int64")
    if found.any():
        matched = train_rows.loc[best[found]]
        subject[found] = matched["subject"].astype(str).to_numpy()
        slice_[found] = pd.array(matched["slice"].to_numpy(), dtype="Int64")
    return subject, slice_


def result_table(result: SearchResult, slices: pd.DataFrame, query_offset: int = 0,
                 channel_names: list[str] | None = None) -> pd.DataFrame:
    """Tidy table of a search result: query, view, channel_name, r_max, train_index, subject, slice,
    topk_r, topk_index (see the module doc), views in `result.views` order.

    slices: the dataset's slices.csv (columns split, index, subject, slice); query_offset: index of the
    first query in the whole set (a shard's start); channel_names: names of the channels, for the
    `channel_name` of the one-channel views (default: the view itself).
    """
    train_rows = slices[slices["split"] == "train"].set_index("index").sort_index()
    frames = []
    for view in result.views:
        r, idx = result.r[view], result.index[view]
        best = idx[:, 0]
        subject, slice_ = _matched_slices(best, train_rows)
        name = view if not view.isdigit() else (channel_names[int(view)] if channel_names else view)
        frames.append(pd.DataFrame({
            "query": np.arange(query_offset, query_offset + len(best)),
            "view": view,
            "channel_name": name,
            "r_max": r[:, 0],
            "train_index": best,
            "subject": subject,
            "slice": slice_,
            "topk_r": [list(row[np.isfinite(row)]) for row in r],
            "topk_index": [list(row[row >= 0]) for row in idx],
        }))
    return pd.concat(frames, ignore_index=True)


def view_table(name: str, r: np.ndarray, index: np.ndarray, slices: pd.DataFrame, query_offset: int = 0,
               dy: np.ndarray | None = None, dx: np.ndarray | None = None,
               flipped: np.ndarray | None = None) -> pd.DataFrame:
    """Rows of one added view (shift, flip, foreground, detector) in the table's layout.

    r, index: (M, k) best first (NaN / −1 undefined). dy, dx, flipped: (M, k) the best match's query
    translation (pixels, down/right positive) and mirroring, as columns `shift_y`, `shift_x`, `flipped`.
    """
    train_rows = slices[slices["split"] == "train"].set_index("index").sort_index()
    best = index[:, 0]
    found = best >= 0
    subject, slice_ = _matched_slices(best, train_rows)
    table = pd.DataFrame({"query": np.arange(query_offset, query_offset + len(best)), "view": name,
                          "channel_name": name, "r_max": r[:, 0], "train_index": best, "subject": subject,
                          "slice": slice_, "topk_r": [list(row[np.isfinite(row)]) for row in r],
                          "topk_index": [list(row[row >= 0]) for row in index]})
    if dy is not None:
        table["shift_y"] = pd.array(np.where(found, dy[:, 0], 0), dtype="Int64")
        table["shift_x"] = pd.array(np.where(found, dx[:, 0], 0), dtype="Int64")
        table["flipped"] = pd.array(np.where(found, flipped[:, 0], False), dtype="boolean")
        table.loc[~found, ["shift_y", "shift_x", "flipped"]] = pd.NA
    return table


def write_table(table: pd.DataFrame, path, meta: dict) -> None:
    """Write `table` as Parquet at `path` (atomically) with `meta` (JSON-serialisable) in its schema metadata."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    with atomic_output(path) as tmp:
        pq.write_table(arrow, tmp)


def read_table(path) -> tuple[pd.DataFrame, dict]:
    """(table, meta) of a memorization table written by `write_table`.

    Raises InputError naming `path` when it is missing or not Parquet, or was written by an older
    medmem (views in column `channel`).
    """
    path = Path(path)
    try:
        arrow = pq.read_table(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable memorization table ({exc})") from None
    meta = json.loads((arrow.schema.metadata or {}).get(META_KEY, b"{}"))
    return require_view_column(arrow.to_pandas(), path), meta


def gather(shard_paths, output) -> pd.DataFrame:
    """Join shard tables; every query of the full set must appear exactly once, from one training set.

    shard_paths: the shards' .parquet files (any order); output: the joined table's path, written with
    the first shard's metadata (shard "all", summed fallbacks and constant queries). Rows are sorted
    by view (the metadata's order), then query. Returns the table. Raises InputError naming a shard
    that is unreadable or whose training set, query count, views or top_k differ, or naming `output`
    when the shards do not cover queries 0..M−1 exactly once.
    """
    tables, metas = zip(*(read_table(p) for p in shard_paths))
    first = metas[0]
    for path, meta in zip(shard_paths, metas):
        for key in ("train_fingerprint", "n_queries_total", "views", "top_k"):
            if meta.get(key) != first.get(key):
                raise InputError(f"{path}: shard does not belong with {shard_paths[0]} ({key} differs)")
    table = pd.concat(tables, ignore_index=True).sort_values(["view", "query"], kind="stable")
    expected = first["n_queries_total"]
    per_view = table.groupby("view")["query"]
    if (per_view.nunique() != expected).any() or (per_view.size() != expected).any():
        raise InputError(f"{output}: shards do not cover queries 0..{expected - 1} exactly once")
    order = {v: i for i, v in enumerate(first["views"])}
    table = table.sort_values(["view", "query"], key=lambda c: c.map(order) if c.name == "view" else c,
                              kind="stable").reset_index(drop=True)
    meta = {**first, "shard": "all", "fallbacks": sum(m.get("fallbacks", 0) for m in metas),
            "constant_queries": {v: sum(m["constant_queries"][v] for m in metas) for v in first["views"]},
            "n_queries": expected}
    write_table(table, output, meta)
    return table
