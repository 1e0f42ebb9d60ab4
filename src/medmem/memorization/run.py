"""`medmem memorization`: files in, table out. The numerical work is `search.highest_correlation`."""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import pandas as pd
import torch

from medmem.devices import resolve_device
from medmem.errors import InputError
from medmem.io import channel_names, dataset_files, open_image_shards, open_images, read_dataset_info
from medmem.memorization.search import highest_correlation
from medmem.memorization.table import result_table, view_table, write_table
from medmem.memorization.views import foreground_correlation, shift_flip_correlation
from medmem.parallel import parse_shard

log = logging.getLogger(__name__)


def resolve_cache_gb(cache_gb, device: str) -> float:
    """Memory for the normalised training images kept on the device between query blocks.

    cache_gb: a positive number of GB (float or numeric string), or None / "auto": 4 GB on the CPU;
    on a GPU half of its free memory, so that a whole training set of 256×256
    images (30,000 × 5 channels: 49 GB with the uint8 originals) is normalised once, not once per
    query block. Raises InputError for a value that is not a positive number.
    """
    if cache_gb in (None, "auto"):
        if device == "cuda":
            return 0.5 * torch.cuda.mem_get_info()[0] / 2**30
        return 4.0
    try:
        value = float(cache_gb)
    except (TypeError, ValueError):
        raise InputError(f"--cache-gb must be a number of GB or 'auto', got '{cache_gb}'") from None
    if not value > 0:
        raise InputError(f"--cache-gb must be positive, got {cache_gb}")
    return value


def load_training_set(train, slices=None, info=None) -> tuple:
    """(train, slices, names, mr, fingerprint) of a prepared dataset.

    `train`: train.npy or the prepared dataset's folder; `slices`, `info`: its slices.csv and
    dataset.json (default: beside train.npy). Returns train: train.npy memory-mapped, (N, C, H, W)
    uint8; slices: slices.csv (subject as str); names: channel names (dataset.json, else "0", "1",
    ...); mr: indices of the MR channels (BraTS: all but seg; else []); fingerprint: 16 hex digits of
    SHA-256 over slices.csv and the array's shape. Raises InputError naming the file for a missing or
    unreadable train.npy or slices.csv, missing columns (split, index, subject, slice), or a train row
    count that differs from the images'.
    """
    files = dataset_files(train, slices=slices, info=info)
    train = open_images(files.train, "training images")
    slices_path = files.slices
    if not slices_path.is_file():
        raise InputError(f"{slices_path}: slices table does not exist")
    slices = pd.read_csv(slices_path, dtype={"subject": str})
    missing = {"split", "index", "subject", "slice"} - set(slices.columns)
    if missing:
        raise InputError(f"{slices_path}: missing column(s) {sorted(missing)}")
    if (slices["split"] == "train").sum() != len(train):
        raise InputError(f"{slices_path}: {(slices['split'] == 'train').sum()} train rows for "
                         f"{len(train)} images in train.npy")
    info = read_dataset_info(files.info)
    names = channel_names(train.shape[1], info.get("channels"))
    mr = [c for c, name in enumerate(names) if info.get("kind") == "brats" and name != "seg"]
    fingerprint = hashlib.sha256(slices_path.read_bytes() + str(train.shape).encode()).hexdigest()[:16]
    return train, slices, names, mr, fingerprint


def open_queries(queries_path, train) -> tuple:
    """The query images (one .npy or the list of a set's shards, memory-mapped) and their name for
    messages; InputError when their C×H×W differs from the training images'."""
    queries = open_image_shards(queries_path, "query images")
    if not isinstance(queries_path, (str, os.PathLike)):  # the shards of one set
        queries_path = queries_path[0] if len(queries_path) == 1 else [str(p) for p in queries_path]
    if queries.shape[1:] != train.shape[1:]:
        raise InputError(f"{queries_path}: images of shape {queries.shape[1:]} do not match the training "
                         f"images {train.shape[1:]}")
    return queries, queries_path


def run_memorization(train_dir, queries_path, output, *, top_k=5, device="auto", shard=None,
                     precision=None, block_queries=None, block_train=1024, cache_gb="auto", shift=0,
                     flip=False, foreground=False, slices=None, info=None) -> pd.DataFrame:
    """The study's views and, when asked, `shift` (±shift pixels), `flip` and `foreground`.

    train_dir: train.npy or the prepared dataset's folder (`load_training_set`, with `slices` and
    `info`); queries_path: one (M, C, H, W) uint8 .npy or the list of a set's shards; output: the
    table's .parquet (`table.write_table`, one row per query of the shard and view; see
    `memorization.table`). top_k >= 1; shard "i/n" searches queries i·M//n .. (i+1)·M//n; precision:
    "float32", "tf32" or None/"auto" (tf32 on CUDA); r is exact either way; block_queries (default: by
    device and image size), block_train, cache_gb: see `search.highest_correlation` and
    `resolve_cache_gb`. Returns the table. Raises InputError for bad files, a query shape other than
    the training images', top_k < 1, shift < 0 or a bad shard.
    """
    train, slices, names, mr, fingerprint = load_training_set(train_dir, slices, info)
    queries, queries_path = open_queries(queries_path, train)
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    if shift < 0:
        raise InputError(f"--shift must be >= 0, got {shift}")
    i, n = parse_shard(shard)
    start, stop = i * len(queries) // n, (i + 1) * len(queries) // n
    device = resolve_device(device)
    if precision in (None, "auto"):
        precision = "tf32" if device == "cuda" else "float32"
    if not block_queries:  # CPU: large blocks amortise packing the training block (~1 GB of queries)
        per_query = 2 * 4 * int(np.prod(queries.shape[1:]))
        block_queries = 4096 if device == "cuda" else int(min(1024, max(128, 2**30 // per_query)))
    cache_gb = resolve_cache_gb(cache_gb, device)
    log.info("%d queries (shard %d/%d: %d..%d) against %d training images of %s on %s (%s screen, "
             "%.1f GB training cache)", stop - start, i, n, start, stop, len(train), train.shape[1:], device,
             precision, cache_gb)
    result = highest_correlation(train, queries[start:stop], top_k=top_k, mr_channels=mr, device=device,
                                 precision=precision, block_queries=block_queries, block_train=block_train,
                                 cache_gb=cache_gb)
    for view in result.views:
        if result.constant_queries[view]:
            log.warning("view %s: %d of %d query images are constant, r is undefined (NaN) for them",
                        view, result.constant_queries[view], stop - start)
        if result.constant_train[view]:
            log.info("view %s: %d constant training images cannot be matched", view, result.constant_train[view])
    table = result_table(result, slices, start, names)
    extra = []
    if shift > 0 or flip:
        log.info("shift ±%d%s view(s): %d searches per query", shift, " and flip" if flip else "",
                 (2 * shift + 1) ** 2 * (2 if flip else 1))
        found = shift_flip_correlation(train, queries[start:stop], shift=shift, flip=flip, top_k=top_k,
                                       mr_channels=mr, device=device, precision=precision,
                                       block_queries=block_queries, block_train=block_train, cache_gb=cache_gb)
        for name, v in found.items():
            extra.append(view_table(name, v["r"], v["index"], slices, start, v["dy"], v["dx"], v["flipped"]))
    if foreground:
        log.info("foreground view: Pearson r over pixels non-zero in either image")
        v = foreground_correlation(train, queries[start:stop], top_k=top_k, device=device,
                                   block_queries=min(block_queries, 1024), block_train=block_train)
        extra.append(view_table("foreground", v["r"], v["index"], slices, start))
    if extra:
        table = pd.concat([table, *extra], ignore_index=True)
        for view in (t["view"].iloc[0] for t in extra):
            result.views.append(view)
            undefined = int(table.loc[table["view"] == view, "r_max"].isna().sum())
            result.constant_queries[view] = undefined
            result.constant_train[view] = 0
    meta = {"train_dir": str(train_dir), "queries": queries_path if isinstance(queries_path, list) else str(queries_path),
             "train_fingerprint": fingerprint,
            "n_train": len(train), "n_queries_total": len(queries), "n_queries": stop - start,
            "shard": f"{i}/{n}", "top_k": top_k, "views": result.views, "mr_channels": mr,
            "channel_names": names, "epsilon": result.epsilon, "fallbacks": result.fallbacks,
            "constant_queries": result.constant_queries, "constant_train": result.constant_train,
            "shift": shift, "flip": flip, "foreground": foreground, **result.details}
    write_table(table, output, meta)
    return table
