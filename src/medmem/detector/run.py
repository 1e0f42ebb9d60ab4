"""`medmem detector-train` and `medmem detector-search`: files in, weights / table out."""

from __future__ import annotations

import logging

import numpy as np

from medmem.errors import InputError
from medmem.devices import resolve_device
from medmem.io import write_json
from medmem.memorization.run import load_training_set, open_queries
from medmem.memorization.table import view_table, write_table

log = logging.getLogger(__name__)
VIEW = "detector"


def run_train(train_dir, output, *, steps=600, batch=64, lr=1e-3, temperature=0.2, width=32, dim=128, seed=0,
              device="auto", progress=True, slices=None, info=None) -> list[float]:
    """Train the copy detector on `train_dir` (train.npy, or the prepared dataset's folder; `slices`,
    `info`: its slices.csv and dataset.json, default beside it) (`model.train_detector`) and save it at
    `output` (`model.save_detector`) with `output`.json (settings and the loss per step).

    Returns the NT-Xent loss per step. Raises InputError for a bad dataset, steps, batch, width or dim
    below 1, or a temperature or lr that is not positive.
    """
    from medmem.detector.model import save_detector, train_detector

    train, _, names, _, fingerprint = load_training_set(train_dir, slices, info)
    for key, value in (("steps", steps), ("batch", batch), ("width", width), ("dim", dim)):
        if value < 1:
            raise InputError(f"--{key} must be at least 1, got {value}")
    if not (temperature > 0 and lr > 0):
        raise InputError("--temperature and --lr must be positive")
    device = resolve_device(device)
    model, losses = train_detector(np.asarray(train), steps=steps, batch=batch, lr=lr, temperature=temperature,
                                   width=width, dim=dim, seed=seed, device=device, progress=progress)
    extra = {"train_fingerprint": fingerprint, "steps": steps, "batch": batch, "lr": lr,
             "temperature": temperature, "seed": seed, "loss_first": losses[0], "loss_last": losses[-1],
             "channels": names}
    save_detector(model, output, extra)
    write_json({**extra, "loss": losses}, str(output) + ".json")
    return losses


def run_search(train_dir, weights, queries_path, output, *, top_k=5, device="auto", slices=None, info=None):
    """The `detector` view: top-k cosine similarity (in [-1, 1], in the table's `r_max`) of the
    queries' embeddings against the training images' (`train_dir`: train.npy or its folder; `slices`,
    `info` default beside it), as a memorization table at `output` (view "detector"; see
    `memorization.table`). queries_path: one (M, C, H, W) uint8 .npy or a set's shards.

    Returns the table. Raises InputError for bad files, top_k < 1, weights trained on another
    training set (fingerprint) or for another image size or channel count.
    """
    from medmem.detector.model import embed, load_detector
    from medmem.detector.search import cosine_topk

    train, slices, _, _, fingerprint = load_training_set(train_dir, slices, info)
    queries, queries_path = open_queries(queries_path, train)
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    model, extra = load_detector(weights)
    if extra.get("train_fingerprint") not in (None, fingerprint):
        raise InputError(f"{weights}: the detector was trained on another training set than {train_dir}")
    if model.config["channels"] != train.shape[1] or model.config["size"] != train.shape[-1]:
        raise InputError(f"{weights}: detector for {model.config['channels']}×{model.config['size']}² images, "
                         f"the data are {train.shape[1]}×{train.shape[-1]}²")
    device = resolve_device(device)
    e_train, e_query = embed(model, train, device=device), embed(model, queries, device=device)
    found = cosine_topk(e_train, e_query, top_k=top_k, device=device)
    table = view_table(VIEW, found["r"], found["index"], slices)
    meta = {"train_dir": str(train_dir),
            "queries": queries_path if isinstance(queries_path, list) else str(queries_path), "train_fingerprint": fingerprint,
            "weights": str(weights), "n_train": len(train), "n_queries_total": len(queries),
            "n_queries": len(queries), "shard": "0/1", "top_k": top_k, "views": [VIEW],
            "epsilon": found["epsilon"], "constant_queries": {VIEW: int(np.isnan(found["r"][:, 0]).sum())},
            "measure": "cosine similarity of the copy detector's embeddings"}
    write_table(table, output, meta)
    return table
