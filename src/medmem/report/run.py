"""`medmem report figures` (one dataset × model) and `medmem report summary` (all of them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medmem.errors import InputError
from medmem.io import channel_names, open_image_shards, open_images, read_dataset_info, write_csv, write_json
from medmem.memorization.table import read_table, require_view_column
from medmem.report import figures
from medmem.report.summary import THRESHOLDS, lead_view, split_note, summary_row, write_summary
from medmem.report.views import flagged_shares, view_pairs


def _csv(path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file does not exist")
    try:
        return pd.read_csv(path, dtype={"view": str, "threshold": str})
    except Exception as exc:
        raise InputError(f"{path}: not a readable CSV ({type(exc).__name__})") from None


def _json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg})") from None


def report_figures(dataset: str, model: str, inputs: dict, outputs: dict, *, label: str | None = None,
                   model_type: str = "", top: int = 4, thresholds=THRESHOLDS, combine=None) -> dict:
    """The figures and the summary row of one dataset × generator; returns the row.

    `inputs` (paths): table, holdout (memorization tables), baseline, calibration (from calibrate),
    quality (.json), samples (the sample files in order: a set's shards), train (train.npy), slices,
    info (slices.csv, dataset.json); optional: sampling (the samples' .json record, default beside the
    first sample file), curve (log.csv; None for a generator trained elsewhere), detector and
    detector_holdout (the learned detector's tables). `outputs` (paths): histogram_figure, pairs_figure,
    samples_figure, training_figure, view_pairs_figure (.png), flags (.csv), row (.json).
    Raises InputError naming a missing or unreadable file.
    """
    sample_files = [Path(p) for p in inputs["samples"]]
    table, _ = read_table(inputs["table"])
    holdout, _ = read_table(inputs["holdout"])
    if inputs.get("detector") and inputs.get("detector_holdout"):  # the learned detector's view
        table = pd.concat([table, read_table(inputs["detector"])[0]], ignore_index=True)
        holdout = pd.concat([holdout, read_table(inputs["detector_holdout"])[0]], ignore_index=True)
    baseline, calibration = (require_view_column(_csv(inputs[k]), inputs[k]) for k in ("baseline", "calibration"))
    quality = _json(inputs["quality"])
    samples = open_image_shards(sample_files, "synthetic images")
    train = open_images(inputs["train"], "training images")
    info = read_dataset_info(inputs["info"])
    slices = _csv(inputs["slices"])
    slices = slices[slices["split"] == "train"].astype({"subject": str})
    sampling = Path(inputs.get("sampling") or sample_files[0].with_suffix(".json"))  # shards record the same
    record = _json(sampling) if sampling.is_file() else {}
    sampler = record.get("sampler", "")
    names = channel_names(train.shape[1], info.get("channels"))
    shown = label or figures.label(model)
    name = f"{shown} on {dataset}"
    view = lead_view(table)
    kind = model_type or model

    figures.save(figures.correlation_histograms(table, holdout, baseline, kind, f"{name}: highest correlation "
                                                "of each sample with the training set", legend=shown),
                 outputs["histogram_figure"])
    figures.save(figures.copy_pairs(table, samples, train, slices, view, top, name), outputs["pairs_figure"])
    figures.save(figures.sample_grid(samples, train, names, f"{name}: samples beside training images"),
                 outputs["samples_figure"])
    curve = _csv(inputs["curve"]) if inputs.get("curve") else None
    figures.save(figures.training_curves(curve, kind, f"{name}: training", record.get("kimg")),
                 outputs["training_figure"])
    write_csv(flagged_shares(table, holdout, baseline, combine), outputs["flags"])
    added = [v for v in ("shift", "flip", "foreground", "detector") if v in set(table["view"].astype(str))]
    figures.save(view_pairs(table, samples, train, [view, *added], 2, name), outputs["view_pairs_figure"])
    row = summary_row(dataset, model, table, baseline, calibration, quality, info["images"]["train"], sampler, view,
                      holdout=holdout, thresholds=tuple(thresholds), model_type=model_type, label=shown)
    row["split_note"] = split_note(info)
    privacy = record.get("privacy") or {}  # DP-SGD: the accountant's guarantee per training image
    row["dp_epsilon"], row["dp_delta"] = privacy.get("epsilon", np.nan), privacy.get("delta", np.nan)
    write_json(row, outputs["row"])
    return row


def report_summary(rows, table, markdown, figure) -> pd.DataFrame:
    """`table` (summary.csv), `markdown` (summary.md) and `figure` (summary.png) from the row.json files
    `rows` (one per dataset × generator, `report_figures`); returns the table. Raises InputError for a
    missing or invalid file."""
    summary = write_summary([_json(p) for p in rows], table, markdown)
    figures.save(figures.cross_dataset_summary(summary), figure)
    return summary
