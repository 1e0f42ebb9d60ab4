"""`medmem audit TRAIN SAMPLES OUT_DIR [--holdout HELDOUT]`: the whole audit of a generator trained elsewhere.

Import (`audit.images`), the exact search of every sample against every training image in every view
(`memorization.run.run_memorization`, so views added there appear here), planted copies and the
held-out baseline (`memorization.planted`, `memorization.calibration`), figures (`report.figures`), the
tables and one self-contained HTML report (`audit.html`). Everything is written under a temporary
folder beside OUT_DIR and moved into OUT_DIR only when the whole audit succeeded.

Outputs in OUT_DIR:
- `memorization.csv`: one row per sample and view: sample, view, channel_name, r_max, train_name,
  train_index, train_subject, train_slice, holdout_p99, above_holdout_p99 (file names as given);
- `study_<channel>.csv`, one per channel: the study's layout `synthetic_name, best_training_name, max_corr`;
- `calibration.csv`, `holdout_baseline.csv` (as `medmem calibrate` writes them), `verdict.csv` (per view:
  counts above the held-out p99, and `verdict`/`verdict_text` from `memorization.verdict.judge`);
- `fingerprints.csv` (every input file with its size and SHA-256), `audit.html`, `figures/*.png`;
- `data/` (the imported arrays) and `memorization/*.parquet` (the full tables, top-k included).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from medmem.audit import html
from medmem.audit.images import FILES_SEP, STUDY_CHANNELS, import_dataset, import_images, write_fingerprints
from medmem.errors import InputError
from medmem.io import atomic_output, open_images, write_csv
from medmem.memorization import calibration, planted
from medmem.memorization.run import run_memorization
from medmem.memorization.verdict import concentration, judge, nearest_indices
from medmem.report import figures

log = logging.getLogger(__name__)

SIGNIFICANCE = 0.01  # one-sided binomial test of the count above the held-out p99 against the false-alarm rate


def _channel_file(files: pd.Series, view: str, names: pd.Series) -> pd.Series:
    """The file as given for a channel view (study layout: that channel's file), else the image's name."""
    if not view.isdigit():
        return names
    c = int(view)
    return files.map(lambda f: f.split(FILES_SEP)[c] if isinstance(f, str) and len(f.split(FILES_SEP)) > c
                     else f)


def memorization_rows(table: pd.DataFrame, samples: pd.DataFrame, train: pd.DataFrame,
                      baseline: pd.DataFrame) -> pd.DataFrame:
    """memorization.csv: one row per sample and view with the file names as given.

    table: the samples' memorization table; samples, train: the imported sets' CSVs (index, name,
    files); baseline: holdout_baseline.csv (view, p99; may be empty). Columns: sample, view,
    channel_name, r_max (Pearson r in [-1, 1], NaN undefined), train_name (None where unmatched),
    train_index (−1), train_subject, train_slice (Int64), holdout_p99, above_holdout_p99 (NA without
    a baseline).
    """
    train = train.set_index("index").sort_index()
    samples = samples.set_index("index").sort_index()
    p99 = dict(zip(baseline["view"].astype(str), baseline["p99"])) if len(baseline) else {}
    frames = []
    for view, part in table.groupby("view", sort=False):
        q = part["query"].to_numpy()
        t = part["train_index"].to_numpy()
        found = t >= 0
        sample_names = _channel_file(samples["files"], view, samples["name"]).reindex(q).to_numpy()
        train_names = np.full(len(t), None, object)
        train_names[found] = _channel_file(train["files"], view, train["name"]).reindex(t[found]).to_numpy()
        threshold = float(p99.get(view, np.nan))
        r = part["r_max"].to_numpy(float)
        frames.append(pd.DataFrame({
            "sample": sample_names, "view": view, "channel_name": part["channel_name"].to_numpy(),
            "r_max": r, "train_name": train_names, "train_index": np.where(found, t, -1),
            "train_subject": part["subject"].to_numpy(), "train_slice": pd.array(part["slice"], dtype="Int64"),
            "holdout_p99": threshold,
            "above_holdout_p99": (r >= threshold) if np.isfinite(threshold) else pd.array([pd.NA] * len(r))}))
    return pd.concat(frames, ignore_index=True)


def _in_channel_folder(name):
    """`T1/seed0001.png` -> `seed0001.png` (the study's per-channel CSVs name files within the channel's
    folder); any other name as given (`BraTS2021_00003/slice_15`, `samples.npz[4]`)."""
    if not isinstance(name, str):
        return name
    folder, sep, rest = name.partition("/")
    return rest if sep and folder.lower() in STUDY_CHANNELS else name


def study_tables(rows: pd.DataFrame, channel_names: list[str]) -> dict[str, pd.DataFrame]:
    """The study's CSV layout per channel: synthetic_name, best_training_name, max_corr.

    rows: `memorization_rows`; channel_names: one per channel view "0", "1", .... Returns
    {channel name: table}; file names lose their channel folder (`T1/seed0001.png` → `seed0001.png`),
    as the study's coorelation.py wrote one row per image of one folder (muhamadusman/
    Synthetic_Memorization, coorelation.py lines 42-56).
    """
    out = {}
    for c, name in enumerate(channel_names):
        part = rows[rows["view"] == str(c)]
        out[name] = pd.DataFrame({"synthetic_name": part["sample"].map(_in_channel_folder).to_numpy(),
                                  "best_training_name": part["train_name"].map(_in_channel_folder).to_numpy(),
                                  "max_corr": part["r_max"].to_numpy()})
    return out


def verdicts(table: pd.DataFrame, baseline: pd.DataFrame, detection: pd.DataFrame,
             holdout: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per view: samples at or above the held-out 99th percentile against the count chance gives.

    `verdict` and `verdict_text` come from `memorization.verdict.judge` on the samples' and the held-out
    images' r_max in that view (`holdout`: the held-out memorization table; None: "no baseline"):
    "cannot judge" when the samples do not yet look like real images; `holdout_p05` is the held-out
    quantile it compares the samples' median with.

    `false_alarm` is the cross-fitted share of held-out images at or above that percentile
    (`calibration.cross_fitted_false_alarm`); `p_value` the one-sided binomial probability of at least
    that many samples if each reached it with the false-alarm rate; `n_above_holdout_max` counts samples
    closer to a training image than every held-out image came. NaN without a held-out set.
    """
    rows = []
    for view, part in table.groupby("view", sort=False):
        r = part["r_max"].to_numpy(float)
        finite = r[np.isfinite(r)]
        base = baseline[baseline["view"].astype(str) == view] if len(baseline) else baseline
        p99 = float(base["p99"].iloc[0]) if len(base) else np.nan
        top = float(base["max"].iloc[0]) if len(base) else np.nan
        cal = detection[(detection["view"].astype(str) == view) & (detection["threshold"] == "holdout_p99")]
        fa = float(cal["false_alarm_holdout"].iloc[0]) if len(cal) else np.nan
        above = int((finite >= p99).sum()) if np.isfinite(p99) else None
        rate = fa if np.isfinite(fa) else 0.01
        p = (float(binomtest(above, len(finite), min(max(rate, 1e-12), 1.0), alternative="greater").pvalue)
             if above is not None and len(finite) else np.nan)
        rows.append({"view": view, "channel_name": part["channel_name"].iloc[0], "n_samples": len(r),
                     "n_defined": len(finite), "holdout_p99": p99, "n_above": above, "holdout_max": top,
                     "n_above_holdout_max": int((finite > top).sum()) if np.isfinite(top) else None,
                     "share_above": above / len(finite) if above is not None and len(finite) else np.nan,
                     "false_alarm": fa, "expected_by_chance": rate * len(finite) if np.isfinite(p99) else np.nan,
                     "p_value": p, "r_max_median": float(np.median(finite)) if len(finite) else np.nan,
                     "r_max_max": float(finite.max()) if len(finite) else np.nan,
                     **{f"n_above_{t:.2f}": int((finite >= t).sum()) for t in calibration.THRESHOLDS}})
        held = (holdout.loc[holdout["view"].astype(str) == view, "r_max"].to_numpy(float)
                if holdout is not None and len(holdout) else np.array([]))
        judged = judge(r, held)
        spread = concentration(nearest_indices(part, view),
                               nearest_indices(holdout, view) if holdout is not None and len(holdout) else [])
        rows[-1].update(holdout_p05=judged.holdout_low, verdict=judged.verdict,
                        verdict_text=judged.sentence + (f"; {spread.sentence}" if spread.concentrated else ""),
                        top_match_share=spread.top_share, holdout_top_match_share=spread.holdout_top_share,
                        matched_train_images=spread.n_matched, concentrated=spread.concentrated)
    return pd.DataFrame(rows)


def _no_holdout_calibration(planted_table: pd.DataFrame, manifest: pd.DataFrame, thresholds) -> pd.DataFrame:
    """Planted-copy detection at the fixed thresholds only (no held-out images: no baseline, no false alarms)."""
    views = planted_table.drop_duplicates("view")[["view", "channel_name"]]
    dummy = views.assign(query=0, r_max=np.nan)
    detection, _ = calibration.calibrate(dummy, pd.Series(["-"], index=[0]), planted_table, manifest, thresholds)
    return detection[detection["threshold"] != "holdout_p99"].reset_index(drop=True)


def _save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def _move_into(work: Path, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(work.iterdir()):
        target = output_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(entry, target)


def run_audit(train, samples, output_dir, *, holdout=None, channels=None, size: int = 256, workers: int = 1,
              device: str = "auto", top_k: int = 5, per_perturbation: int = 16, seed: int = 0, pairs: int = 4,
              thresholds=calibration.THRESHOLDS, shift: int = 2, flip: bool = True, foreground: bool = True,
              robust: bool = True, detector_steps: int = 600, combine=("all", "flip", "foreground", "detector"),
              command: str = "") -> pd.DataFrame:
    """Audit `samples` against `train` (and `holdout`); returns the verdict table (one row per view).

    Every view the workflow computes, with the workflow's defaults (`memorization:` in the config schema):
    the study's (each channel, `mr_mean`, `all`), `shift` (±`shift` pixels; 0: off), `flip`, `foreground`,
    the learned copy detector (`detector_steps` optimiser steps on the training images; 0: off), the
    robust planted copies (rotations, crop-and-resize, elastic, partial) and the combined verdict of the
    views in `combine`.

    Inputs: folders or files in any format `audit.images` reads. Raises InputError (one line naming the
    file) for bad input; OUT_DIR then holds nothing new.
    """
    output_dir = Path(output_dir)
    if per_perturbation < 1 or top_k < 1 or pairs < 0 or shift < 0 or detector_steps < 0:
        raise InputError("--planted and --top-k must be at least 1, --pairs, --shift and --detector-steps at "
                         "least 0")
    views = {"shift": shift, "flip": flip, "foreground": foreground}
    work = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        data, mem = work / "data", work / "memorization"
        sets = import_dataset(train, data, holdout=holdout, channels=channels, size=size, workers=workers)
        names = sets["train"].channels
        sets["samples"] = import_images(samples, data / "samples.npy", data / "samples.csv", channels=names,
                                        size=size, workers=workers, expect_shape=sets["train"].shape)
        write_fingerprints(sets, work / "fingerprints.csv")

        train_images = open_images(data / "train.npy", "training images")
        if robust:
            seg = [n.lower() for n in names].index("seg") if "seg" in [n.lower() for n in names] else None
            recipients = open_images(data / "holdout.npy", "held-out images") if holdout is not None else None
            copies, manifest = planted.plant_copies(train_images, per_perturbation, seed, planted.ALL_PERTURBATIONS,
                                                    seg_channel=seg, recipients=recipients)
        else:
            copies, manifest = planted.plant_copies(train_images, per_perturbation, seed)
        _save_npy(copies, data / "planted.npy")
        write_csv(manifest, data / "planted_manifest.csv")
        searched = ["samples", "planted", *(["holdout"] if holdout is not None else [])]
        tables = {q: run_memorization(data, data / f"{q}.npy", mem / f"{q}.parquet",
                                      top_k=top_k if q == "samples" else 1, device=device, **views)
                  for q in searched}
        if detector_steps:
            from medmem.detector.run import run_search, run_train

            run_train(data, work / "detector.pt", steps=detector_steps, seed=seed, device=device)
            for q in searched:
                found = run_search(data, work / "detector.pt", data / f"{q}.npy", mem / f"{q}.detector.parquet",
                                   top_k=top_k if q == "samples" else 1, device=device)
                tables[q] = pd.concat([tables[q], found], ignore_index=True)
        table, planted_table = tables["samples"], tables["planted"]
        slices = pd.read_csv(data / "slices.csv", dtype={"subject": str, "name": str, "files": str},
                             keep_default_na=False, na_values={"slice": [""]})
        if holdout is not None:
            held = tables["holdout"]
            subjects = slices[slices["split"] == "holdout"].set_index("index")["subject"]
            detection, baseline = calibration.calibrate(held, subjects, planted_table, manifest, tuple(thresholds),
                                                        combine=combine)
            write_csv(baseline, work / "holdout_baseline.csv")
        else:
            held = pd.DataFrame(columns=["view", "r_max"])
            detection = _no_holdout_calibration(planted_table, manifest, tuple(thresholds))
            baseline = pd.DataFrame(columns=["view", "channel_name", "p99", "mean", "median", "max"])
        write_csv(detection, work / "calibration.csv")

        sample_rows = pd.read_csv(data / "samples.csv", dtype={"subject": str, "name": str, "files": str})
        train_rows = slices[slices["split"] == "train"]
        rows = memorization_rows(table, sample_rows, train_rows, baseline)
        write_csv(rows, work / "memorization.csv")
        for name, study in study_tables(rows, names).items():
            write_csv(study, work / f"study_{name}.csv")
        verdict = verdicts(table, baseline, detection, held if holdout is not None else None)
        write_csv(verdict, work / "verdict.csv")

        samples_images = open_images(data / "samples.npy", "synthetic images")
        with np.errstate(invalid="ignore", divide="ignore"):  # no held-out set: an empty histogram
            shown = {"histogram": figures.correlation_histograms(
                table, held, baseline, "synthetic", "Highest correlation of each sample with the training set")}
        for c, name in enumerate(names):
            shown[f"pairs_{name}"] = html.pair_figure(table, samples_images, train_images, train_rows, str(c), pairs,
                                                      rows)
        shown["samples"] = figures.sample_grid(samples_images, train_images, names, "Samples beside training images")
        paths = {}
        for key, fig in shown.items():
            paths[key] = work / "figures" / f"{key}.png"
            figures.save(fig, paths[key])
        page = html.render(sets=sets, verdict=verdict, detection=detection, baseline=baseline, figures=paths,
                           channel_names=names, has_holdout=holdout is not None, settings={
                               "top_k": top_k, "planted_per_perturbation": per_perturbation, "seed": seed,
                               "shift": shift, "flip": flip, "foreground": foreground, "robust_planted": robust,
                               "detector_steps": detector_steps, "combine": list(combine),
                               "image_size_for_volumes": size, "device": device}, command=command)
        with atomic_output(work / "audit.html") as tmp:
            tmp.write_text(page, encoding="utf-8")
        _move_into(work, output_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("audit written to %s (open %s)", output_dir, output_dir / "audit.html")
    return verdict
