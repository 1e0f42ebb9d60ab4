"""A prepared dataset made from another's: only its first N training subjects, the same held-out images.

The dataset-size experiment trains one generator on 2, 4, 8, 16… subjects of one dataset. Each size is
the parent's prepared dataset cut to the first N training subjects in the order the parent's split
lists them (slices.csv's training rows: BraTS subjects in the split's order, chest x-ray patients by
pseudonym, which is the split's shuffled order), so a smaller set is always part of a larger one; the
held-out images are the parent's, byte for byte, so every size is judged against the same unseen
subjects.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from medmem.errors import InputError
from medmem.io import (NpyWriter, atomic_output, dataset_files, open_images, read_dataset_info, write_csv,
                       write_json)

log = logging.getLogger(__name__)
SLICE_COLUMNS = ("split", "index", "subject")
CHUNK = 1024  # images copied per step (the training set is never held in memory)


def read_slices(path) -> pd.DataFrame:
    """A prepared dataset's slices.csv, every column as text as written (so it is written back unchanged)
    but `index` as integers; InputError (naming the file) when it is missing, unreadable, lacks the
    columns split, index, subject, or has an index that is not an integer."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: slices table does not exist")
    try:
        slices = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: not a readable slices table ({' '.join(str(exc).split())})") from None
    missing = sorted(set(SLICE_COLUMNS) - set(slices.columns))
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")
    index = pd.to_numeric(slices["index"], errors="coerce")
    if index.isna().any() or (index % 1 != 0).any():
        raise InputError(f"{path}: column index holds a value that is not an integer")
    return slices.assign(index=index.astype(np.int64))


def training_subjects(slices: pd.DataFrame) -> list[str]:
    """The training subjects (patients for chest x-rays) of a slices table, in the order its training
    rows list them (order of first appearance)."""
    train = slices[slices["split"] == "train"].sort_values("index", kind="stable")
    return list(dict.fromkeys(train["subject"]))


def subset_rows(slices: pd.DataFrame, n: int, where="slices.csv") -> tuple[pd.DataFrame, list[str]]:
    """The training rows of the first `n` training subjects (sorted by the parent's index, the order of
    the images in train.npy) and those subjects' ids, in order.

    Raises InputError (naming `where`) when n < 1 or n exceeds the training subjects listed.
    """
    subjects = training_subjects(slices)
    if n < 1:
        raise InputError(f"--train-subjects must be at least 1, got {n}")
    if n > len(subjects):
        raise InputError(f"{where}: --train-subjects {n} exceeds the {len(subjects)} training subjects it lists")
    kept = subjects[:n]
    train = slices[slices["split"] == "train"].sort_values("index", kind="stable")
    return train[train["subject"].isin(set(kept))], kept


def count_subset_images(slices_path, n: int) -> int:
    """Training images of the first `n` training subjects of a prepared dataset's slices.csv
    (what `make_subset` would keep). Raises InputError as `read_slices` and `subset_rows`."""
    rows, _ = subset_rows(read_slices(slices_path), n, slices_path)
    return len(rows)


def make_subset(train, output_dir, n: int, *, slices=None, info=None, holdout=None, parent: str | None = None) -> dict:
    """Write a dataset of the first `n` training subjects of a prepared dataset into `output_dir`.

    train: the parent's train.npy (uint8 N×C×H×W; or its folder); slices, info, holdout: its
    slices.csv, dataset.json and holdout.npy (default: beside train.npy); parent: the parent's name
    for dataset.json (default: the name of train.npy's folder).
    Writes train.npy (the kept subjects' images, in the parent's order), holdout.npy (a byte copy of
    the parent's), slices.csv (the kept training rows re-indexed 0…, then the parent's held-out rows
    unchanged, every column kept) and dataset.json (the parent's, with `images.train` and
    `subjects.train` of the subset and `subset_of`: {dataset, train_subjects, subjects (ids, in
    order), parent_images}); each under a temporary name first, renamed once all are complete.
    Returns dataset.json's content.

    Raises InputError (one line naming the file) for missing or unreadable files, a slices table whose
    training rows do not match train.npy, n < 1 or n above the parent's training subjects.
    """
    files = dataset_files(train, slices=slices, info=info, holdout=holdout)
    images = open_images(files.train, "training images")
    table = read_slices(files.slices)
    n_train_rows = int((table["split"] == "train").sum())
    if n_train_rows != len(images):
        raise InputError(f"{files.slices}: {n_train_rows} train rows for {len(images)} images in {files.train}")
    train_index = np.sort(table.loc[table["split"] == "train", "index"].to_numpy())
    if not np.array_equal(train_index, np.arange(len(images))):
        raise InputError(f"{files.slices}: the train rows' index is not 0…{len(images) - 1}")
    if not files.holdout.is_file():
        raise InputError(f"{files.holdout}: held-out images file does not exist")
    parent_info = read_dataset_info(files.info)
    if not parent_info:
        raise InputError(f"{files.info}: dataset.json does not exist")
    rows, kept = subset_rows(table, n, files.slices)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    order = rows["index"].to_numpy()
    writer = NpyWriter(output_dir / "train.npy", images.shape[1:])
    try:
        # the kept images are runs of consecutive indices (a subject's slices); copied in chunks
        for start in range(0, len(order), CHUNK):
            writer.append(images[order[start:start + CHUNK]])
        with atomic_output(output_dir / "holdout.npy") as tmp:
            shutil.copyfile(files.holdout, tmp)
            new_rows = rows.assign(index=np.arange(len(rows)))
            out = pd.concat([new_rows, table[table["split"] != "train"]], ignore_index=True)
            info = _subset_info(parent_info, len(rows), kept, n, parent or files.train.parent.name)
            writer.commit()
        write_csv(out, output_dir / "slices.csv")
        write_json(info, output_dir / "dataset.json")
    except BaseException:
        writer.abort()
        raise
    log.info("subset of %s: %d training subject(s), %d of %d training images; held-out images unchanged",
             files.train, n, len(rows), len(images))
    return info


def _subset_info(parent_info: dict, images: int, kept: list[str], n: int, parent: str) -> dict:
    info = {**parent_info}
    info["images"] = {**parent_info.get("images", {}), "train": images}
    if isinstance(parent_info.get("subjects"), dict):
        info["subjects"] = {**parent_info["subjects"], "train": n}
    info["subset_of"] = {"dataset": parent, "train_subjects": n, "subjects": kept,
                         "parent_images": parent_info.get("images", {})}
    return info
