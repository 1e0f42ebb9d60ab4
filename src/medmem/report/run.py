"""`medmem report figures` (one dataset × model) and `medmem report summary` (all of them)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medmem.errors import InputError
from medmem.io import open_image_shards, open_images, read_dataset_info, write_csv, write_json
from medmem.memorization.table import read_table, require_view_column
from medmem.report import figures
from medmem.report.summary import lead_view, split_note, summary_row, write_summary
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


def inputs(results, dataset: str, model: str) -> dict[str, Path]:
    """Where the workflow puts everything one dataset × model figure set reads."""
    r = Path(results)
    return {"data": r / "data" / dataset, "table": r / "memorization" / dataset / f"{model}.parquet",
            "holdout": r / "memorization" / dataset / "holdout.parquet",
            "baseline": r / "memorization" / dataset / "holdout_baseline.csv",
            "calibration": r / "memorization" / dataset / "calibration.csv",
            "quality": r / "quality" / dataset / f"{model}.json",
            "samples": r / "samples" / dataset / f"{model}.npy", "curve": r / "train" / dataset / model / "log.csv",
            "detector": r / "detector" / dataset / f"{model}.parquet",
            "detector_holdout": r / "detector" / dataset / "holdout.parquet"}


def report_figures(results, dataset: str, model: str, output_dir, top: int = 4, combine=None, samples=None) -> dict:
    """Figures and the summary row; `samples`: the model's sample files in order (its shards), by default
    the one file `inputs` names."""
    paths = inputs(results, dataset, model)
    sample_files = [Path(p) for p in samples] if samples else [paths["samples"]]
    out = Path(output_dir)
    table, _ = read_table(paths["table"])
    holdout, _ = read_table(paths["holdout"])
    if paths["detector"].is_file() and paths["detector_holdout"].is_file():  # the learned detector's view
        table = pd.concat([table, read_table(paths["detector"])[0]], ignore_index=True)
        holdout = pd.concat([holdout, read_table(paths["detector_holdout"])[0]], ignore_index=True)
    baseline, calibration = (require_view_column(_csv(paths[k]), paths[k]) for k in ("baseline", "calibration"))
    quality = _json(paths["quality"])
    samples = open_image_shards(sample_files, "synthetic images")
    train = open_images(paths["data"] / "train.npy", "training images")
    info = read_dataset_info(paths["data"])
    slices = _csv(paths["data"] / "slices.csv")
    slices = slices[slices["split"] == "train"].astype({"subject": str})
    sampling = sample_files[0].with_suffix(".json")  # every shard records the same sampler
    sampler = _json(sampling).get("sampler", "") if sampling.is_file() else ""
    names = list(info.get("channels", [])) or [str(c) for c in range(train.shape[1])]
    name = f"{figures.label(model)} on {dataset}"
    view = lead_view(table)

    figures.save(figures.correlation_histograms(table, holdout, baseline, model, f"{name}: highest correlation "
                                                "of each sample with the training set"), out / "histogram.png")
    figures.save(figures.copy_pairs(table, samples, train, slices, view, top, name), out / "pairs.png")
    figures.save(figures.sample_grid(samples, train, names, f"{name}: samples beside training images"),
                 out / "samples.png")
    figures.save(figures.training_curves(_csv(paths["curve"]), model, f"{name}: training"), out / "training.png")
    write_csv(flagged_shares(table, holdout, baseline, combine), out / "flags.csv")
    added = [v for v in ("shift", "flip", "foreground", "detector") if v in set(table["view"].astype(str))]
    figures.save(view_pairs(table, samples, train, [view, *added], 2, name), out / "view_pairs.png")
    row = summary_row(dataset, model, table, baseline, calibration, quality, info["images"]["train"], sampler, view,
                      holdout=holdout)
    row["split_note"] = split_note(info)
    write_json(row, out / "row.json")
    return row


def report_summary(rows, output_dir) -> pd.DataFrame:
    """summary.csv, summary.md and summary.png in `output_dir` from the row.json files `rows` (one per
    dataset × model, `report_figures`); returns the table. Raises InputError for a missing or invalid file."""
    out = Path(output_dir)
    summary = write_summary([_json(p) for p in rows], out / "summary.csv", out / "summary.md")
    figures.save(figures.cross_dataset_summary(summary), out / "summary.png")
    return summary
