"""Write a prepared dataset: train.npy, holdout.npy, slices.csv, skipped.csv and dataset.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medmem.errors import InputError
from medmem.io import NpyWriter, write_csv, write_json

SPLITS = ("train", "holdout")


class DatasetWriter:
    """Collects images split by split; nothing appears under the final names before `commit()`.

    output_dir: the dataset folder; channels: channel names (C); size: image side S in pixels, or
    (H, W); kind: "brats", "cxr" or "external" (dataset.json `kind`); columns: the extra slices.csv
    columns after split, index, subject, slice. Images are (n, C, H, W) uint8.
    """

    def __init__(self, output_dir, channels: list[str], size: int, kind: str, columns: list[str]):
        self.output_dir = Path(output_dir)
        self.channels = list(channels)
        self.size = size
        self.kind = kind
        self.columns = ["split", "index", "subject", "slice", *columns]
        shape = (len(channels), *((size, size) if isinstance(size, int) else size))  # size: S or (H, W)
        self.arrays = {split: NpyWriter(self.output_dir / f"{split}.npy", shape) for split in SPLITS}
        self.rows: list[dict] = []
        self.skipped: list[dict] = []

    def add(self, split: str, images: np.ndarray, rows: list[dict]) -> None:
        """Append (n, C, H, W) uint8 `images` to "train" or "holdout" with one slices.csv row each
        (keys: subject, and slice or the extra columns). Raises ValueError when the counts differ."""
        if len(images) != len(rows):
            raise ValueError("one metadata row per image")
        start = self.arrays[split].count
        self.arrays[split].append(images)
        for offset, row in enumerate(rows):
            self.rows.append({"split": split, "index": start + offset, "slice": None, **row})

    def skip(self, subject: str, reason: str) -> None:
        """List one skipped item (a subject, or one image of a subject) in skipped.csv."""
        self.skipped.append({"subject": subject, "reason": reason})

    def check_not_empty(self, source, holdout_requested: bool) -> None:
        """InputError (one line naming `source`) if the training split is empty, or if a held-out
        share was requested and no held-out image is left; call before `commit()`."""
        counts = {split: writer.count for split, writer in self.arrays.items()}
        skipped = f" ({len(self.skipped)} skipped, see the log)" if self.skipped else ""
        if counts["train"] == 0:
            raise InputError(f"{source}: no training image is left{skipped}; the training split is empty")
        if holdout_requested and counts["holdout"] == 0:
            raise InputError(f"{source}: a held-out share was requested but no held-out image is left{skipped}; "
                             "add subjects or patients, or set the held-out share to 0")

    def commit(self, extra_info: dict | None = None) -> dict:
        """Write every output under its final name; returns dataset.json's content.

        `skipped_subjects` counts the subjects none of whose images was kept; `skipped_items` the
        rows of skipped.csv (subjects for BraTS, images for chest x-rays).
        """
        counts = {split: writer.count for split, writer in self.arrays.items()}
        kept_subjects = {row["subject"] for row in self.rows}
        skipped_subjects = {row["subject"] for row in self.skipped} - kept_subjects
        for writer in self.arrays.values():
            writer.commit()
        slices = pd.DataFrame(self.rows, columns=self.columns)
        slices["slice"] = slices["slice"].astype("Int64")
        write_csv(slices, self.output_dir / "slices.csv")
        write_csv(pd.DataFrame(self.skipped, columns=["subject", "reason"]),
                  self.output_dir / "skipped.csv")
        info = {"kind": self.kind, "channels": self.channels, "size": self.size,
                "images": counts, "skipped_subjects": len(skipped_subjects), "skipped_items": len(self.skipped),
                **(extra_info or {})}
        write_json(info, self.output_dir / "dataset.json")
        return info

    def abort(self) -> None:
        """Remove the temporary arrays; nothing is left under the final names."""
        for writer in self.arrays.values():
            writer.abort()
