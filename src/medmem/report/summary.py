"""One row of the summary table per dataset × model, and the table itself (CSV and Markdown).

Correlations are those of the *lead channel*: the first channel (T1 for BraTS, the radiograph
for chest x-rays), named in the `channel` column. FID, KID and IS are channel means. The Markdown
table states that its IS is not the study's in value (`IS_NOTE`) and that constant training images
are skipped where the study's script would give NaN (`CONSTANT_NOTE`). `verdict` (one of
`medmem.memorization.verdict.VERDICTS`) and `verdict_text` come from `verdict.judge` on the lead
view: "cannot judge" when the samples do not yet look like real images; `verdict_text` adds
`verdict.concentration`'s sentence when the samples' nearest training images concentrate on few
(mode collapse; columns `CONCENTRATION_COLUMNS`). Appended columns:
`fd_encoder`, `kid_encoder` (`ENCODER_LABEL`: the copy detector's feature space, never Inception's) and
the 95 % bootstrap intervals of `corr_mean` and `share_above_holdout_p99` over samples and over
training subjects (`INTERVAL_COLUMNS`, `medmem.report.bootstrap`), each in its own Markdown section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medmem.io import atomic_output, write_csv
from medmem.memorization.calibration import THRESHOLDS
from medmem.memorization.verdict import LOW_QUANTILE, concentration, judge, nearest_indices
from medmem.report.bootstrap import mean_intervals

IS_NOTE = ("IS (`is`, `is_1split`): torch-fidelity's Inception (1,008 logits, bilinear resize to 299²): "
           "not comparable in value with the study's Keras script (1,000-class softmax, nearest-neighbour "
           "resize, one split), which ranks models the same")
CONSTANT_NOTE = ("Correlations skip constant training images (e.g. empty segmentations): the study's script "
                 "would give NaN for every synthetic image in that channel (np.argmax over a list holding NaN)")
COLUMNS = ["dataset", "model", "n_train", "n_samples", "channel", "corr_mean", "corr_median",
           "share_above_0.90", "share_above_0.95", "share_above_0.99", "holdout_p99", "share_above_holdout_p99",
           "holdout_mean", "planted_exact_detected", "planted_detected_min", "fid", "fid_note", "kid", "is",
           "is_1split", "sampler", "holdout_p05", "verdict", "verdict_text", "type", "label"]
# FD and KID in the copy detector's feature space (`quality` JSON key "encoder"; never Inception figures)
ENCODER_COLUMNS = ["fd_encoder", "kid_encoder"]
ENCODER_LABEL = ("FD / KID in the copy detector's feature space (per dataset; not FID, not comparable "
                 "across datasets)")
# 95 % bootstrap intervals of the lead view's corr_mean and share_above_holdout_p99 (`medmem.report.bootstrap`)
INTERVAL_STATS = ["corr_mean", "share_above_holdout_p99"]
INTERVAL_COLUMNS = [f"{stat}_{end}_{source}" for stat in INTERVAL_STATS for source in ("samples", "subjects")
                    for end in ("lo", "hi")]
# DP-SGD's guarantee (the samples' record "privacy": the accountant's ε and δ per training image; NaN without DP)
PRIVACY_COLUMNS = ["dp_epsilon", "dp_delta"]
# how the samples' nearest training images spread against the held-out images' (`verdict.concentration`)
CONCENTRATION_COLUMNS = ["top_match_share", "holdout_top_match_share", "matched_train_images", "concentrated"]
COLUMNS += CONCENTRATION_COLUMNS + ENCODER_COLUMNS + INTERVAL_COLUMNS + PRIVACY_COLUMNS


def columns(thresholds=THRESHOLDS) -> list[str]:
    """The summary table's columns, with one share column per fixed threshold."""
    shares = [f"share_above_{t:.2f}" for t in thresholds]
    at = COLUMNS.index("share_above_0.90")
    return COLUMNS[:at] + shares + [c for c in COLUMNS[at:] if not c.startswith("share_above_0")]


def lead_view(table: pd.DataFrame) -> str:
    """The view the summary reports: "0" (the first channel) when the memorization table has it,
    else its first view."""
    return "0" if "0" in set(table["view"]) else str(table["view"].iloc[0])


def summary_row(dataset: str, model: str, table: pd.DataFrame, baseline: pd.DataFrame, calibration: pd.DataFrame,
                quality: dict, n_train: int, sampler: str = "", view: str | None = None,
                holdout: pd.DataFrame | None = None, thresholds=THRESHOLDS, model_type: str = "",
                label: str = "") -> dict:
    """The summary row of one dataset × generator (lead view): correlations, shares above each of
    `thresholds` (config memorization.thresholds) and the held-out 99th percentile, planted-copy
    detection, quality, and the verdict. `holdout`: the held-out images' memorization table; without it
    the verdict is "no baseline". `model_type`, `label`: the generator's type and display name."""
    view = view or lead_view(table)
    r = table.loc[table["view"] == view, "r_max"].to_numpy(float)
    finite = r[np.isfinite(r)]
    base = baseline[baseline["view"].astype(str) == view].iloc[0]
    cal = calibration[(calibration["view"].astype(str) == view) & (calibration["threshold"] == "holdout_p99")]
    p99 = float(base["p99"])
    row = {"dataset": dataset, "model": model, "n_train": int(n_train), "n_samples": int(len(r)),
           "channel": table.loc[table["view"] == view, "channel_name"].iloc[0],
           "corr_mean": float(finite.mean()) if len(finite) else np.nan,
           "corr_median": float(np.median(finite)) if len(finite) else np.nan}
    for t in thresholds:
        row[f"share_above_{t:.2f}"] = float(np.mean(finite >= t)) if len(finite) else np.nan
    row["holdout_p99"] = p99
    row["share_above_holdout_p99"] = float(np.mean(finite >= p99)) if len(finite) else np.nan
    row["holdout_mean"] = float(base["mean"])
    exact = cal.loc[cal["perturbation"] == "exact", "detected"]
    row["planted_exact_detected"] = float(exact.iloc[0]) if len(exact) else np.nan
    row["planted_detected_min"] = float(cal["detected"].min()) if len(cal) else np.nan
    means = quality.get("mean", {}) if quality.get("computed") else {}
    row["fid"] = means.get("fid", np.nan)
    row["fid_note"] = quality.get("note", "")
    row["kid"] = means.get("kid_mean", np.nan)
    row["is"] = means.get("is_mean", np.nan)
    row["is_1split"] = means.get("is_1split", np.nan)
    row["sampler"] = sampler
    held = (holdout.loc[holdout["view"].astype(str) == view, "r_max"].to_numpy(float) if holdout is not None
            else np.array([]))
    verdict = judge(r, held, LOW_QUANTILE)
    spread = concentration(nearest_indices(table, view),
                           nearest_indices(holdout, view) if holdout is not None else [], n_train)
    row["holdout_p05"] = verdict.holdout_low
    row["verdict"] = verdict.verdict
    row["verdict_text"] = verdict.sentence + (f"; {spread.sentence}" if spread.concentrated else "")
    row["type"], row["label"] = model_type, label or model
    row.update(top_match_share=spread.top_share, holdout_top_match_share=spread.holdout_top_share,
               matched_train_images=spread.n_matched, concentrated=spread.concentrated)
    row.update(encoder_quality(quality))
    row.update(intervals(table, view, p99))
    return row


def encoder_quality(quality: dict) -> dict:
    """`fd_encoder`, `kid_encoder` of a quality JSON's "encoder" block (`medmem.quality.run`): the Fréchet
    distance and KID in the copy detector's feature space; NaN when not computed (detector off, or a
    JSON written before it existed). Never the Inception FID/KID."""
    block = quality.get("encoder")
    if not isinstance(block, dict) or not block.get("computed"):
        return {"fd_encoder": np.nan, "kid_encoder": np.nan}
    return {"fd_encoder": float(block["fd"]), "kid_encoder": float(block["kid_mean"])}


def intervals(table: pd.DataFrame, view: str, threshold: float) -> dict:
    """The `INTERVAL_COLUMNS` of one memorization table's `view`: 95 % percentile bootstrap intervals
    (`medmem.report.bootstrap.mean_intervals`, 1000 resamples, fixed seed) of the mean highest
    correlation and of the share at or above `threshold` (the held-out 99th percentile), over the
    synthetic images and over the training subjects of their best matches (column `subject`; NaN
    intervals with fewer than 2 subjects). Images with an undefined r are left out, as in the row."""
    part = table.loc[table["view"].astype(str) == view]
    r = part["r_max"].to_numpy(float)
    keep = np.isfinite(r)
    subjects = part["subject"].to_numpy(object)[keep] if "subject" in part else np.full(keep.sum(), None, object)
    values = np.stack([r[keep], (r[keep] >= threshold).astype(float)], axis=1)
    found = mean_intervals(values, subjects)
    row = {}
    for i, stat in enumerate(INTERVAL_STATS):
        for source, (lo, hi) in found.items():
            row[f"{stat}_lo_{source}"], row[f"{stat}_hi_{source}"] = float(lo[i]), float(hi[i])
    return row


def split_note(info: dict) -> str:
    """The report's sentence for a dataset split at image level (dataset.json `split_level`), else ""."""
    if info.get("split_level") != "image":
        return ""
    return (f"split at image level for {info.get('images_without_patient', 0)} images of unknown patient "
            "(--image-level-split): a patient may be on both sides, so the held-out baseline may be inflated")


def _fmt(value, column: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if column.startswith(("share", "planted")):
        return f"{value:.1%}"
    if column.startswith(("corr", "holdout")):
        return f"{value:.3f}"
    if column in ("fid", "is", "is_1split"):
        return f"{value:.2f}"
    if column == "kid":
        return f"{value:.4f}"
    return str(value)


def write_summary(rows: list[dict], csv_path, md_path) -> pd.DataFrame:
    """The summary table (`columns`, rows sorted by dataset, generator) as CSV and as Markdown with the
    verdicts and notes (`IS_NOTE`, `CONSTANT_NOTE`, FID and split notes); returns the table.
    rows: `summary_row` dicts (plus `split_note`), all made with the same thresholds."""
    shares = sorted({k for row in rows for k in row if k.startswith("share_above_0")}) or None
    names = columns(tuple(float(s.rsplit("_", 1)[1]) for s in shares) if shares else THRESHOLDS)
    table = pd.DataFrame(rows, columns=names).sort_values(["dataset", "model"], kind="stable")
    write_csv(table, csv_path)
    shown = [c for c in names if c not in ("fid_note", "sampler", "verdict_text", "type", "label",
                                           *CONCENTRATION_COLUMNS, *ENCODER_COLUMNS, *INTERVAL_COLUMNS,
                                           *PRIVACY_COLUMNS)]  # own sections; concentration: in the verdict
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], c) for c in shown) + " |")
    notes = sorted({n for n in table["fid_note"] if isinstance(n, str) and n})
    text = "\n".join(lines) + "\n"
    private = [f"- {row['dataset']} × {row['model']}: ε = {row['dp_epsilon']:.3g}, δ = {row['dp_delta']:.3g}"
               for _, row in table.iterrows() if pd.notna(row["dp_epsilon"])]
    if private:
        text += ("\nDP-SGD (the Opacus accountant's guarantee for the whole training run, per training image, "
                 "not per patient):\n\n" + "\n".join(private) + "\n")
    verdicts = [f"- {row['dataset']} × {row['model']}: {row['verdict_text']}" for _, row in table.iterrows()
                if isinstance(row["verdict_text"], str) and row["verdict_text"]]
    if verdicts:
        text += "\nVerdict (lead channel):\n\n" + "\n".join(verdicts) + "\n"
    text += interval_markdown(table) + encoder_markdown(table)
    if notes:
        text += "\n" + "\n".join(f"- FID: {n}" for n in notes) + "\n"
    split_notes = [f"- {row['dataset']}: {row['split_note']}" for row in rows if row.get("split_note")]
    if split_notes:
        text += "\n" + "\n".join(dict.fromkeys(split_notes)) + "\n"
    text += f"\n- {IS_NOTE}.\n- {CONSTANT_NOTE}.\n"
    with atomic_output(md_path) as tmp:
        tmp.write_text(text)
    return table


def _with_interval(value, lo, hi, column: str) -> str:
    """"66.7% [33.3, 100.0]" (shares, in %) or "0.882 [0.760, 0.970]"; "–" parts where undefined."""
    def number(v):
        if v is None or not np.isfinite(v):
            return "–"
        return f"{100 * v:.1f}" if column.startswith("share") else f"{v:.3f}"
    return f"{_fmt(value, column)} [{number(lo)}, {number(hi)}]"


def interval_markdown(table: pd.DataFrame) -> str:
    """The Markdown section of the 95 % bootstrap intervals (`INTERVAL_COLUMNS`), one row per dataset ×
    generator, each cell "value [lo, hi]"; "" when the table has none of them (rows of an older medmem)."""
    if not all(c in table for c in INTERVAL_COLUMNS) or table[INTERVAL_COLUMNS].isna().all().all():
        return ""
    heads = [f"{stat} over {source}" for stat in INTERVAL_STATS for source in ("samples", "subjects")]
    lines = ["| dataset | model | " + " | ".join(heads) + " |", "|" + "---|" * (2 + len(heads))]
    for _, row in table.iterrows():
        cells = [_with_interval(row[stat], row[f"{stat}_lo_{source}"], row[f"{stat}_hi_{source}"], stat)
                 for stat in INTERVAL_STATS for source in ("samples", "subjects")]
        lines.append(f"| {row['dataset']} | {row['model']} | " + " | ".join(cells) + " |")
    return ("\n95 % confidence intervals (lead channel; percentile bootstrap, 1,000 resamples, fixed seed): "
            "over samples (the synthetic images resampled) and over training subjects (each image belongs to "
            "the subject of its best match; subjects resampled with their images: the interval to read for "
            "privacy, since slices of one patient are not independent):\n\n" + "\n".join(lines) + "\n")


def encoder_markdown(table: pd.DataFrame) -> str:
    """The Markdown section of `fd_encoder` and `kid_encoder` under `ENCODER_LABEL`; "" when none was
    computed (the copy detector switched off)."""
    if not all(c in table for c in ENCODER_COLUMNS) or table[ENCODER_COLUMNS].isna().all().all():
        return ""
    lines = ["| dataset | model | fd_encoder | kid_encoder |", "|---|---|---|---|"]
    for _, row in table.iterrows():
        fd, kid = row["fd_encoder"], row["kid_encoder"]
        lines.append(f"| {row['dataset']} | {row['model']} | {_fmt(fd, 'fid')} | {_fmt(kid, 'kid')} |")
    return f"\n{ENCODER_LABEL}:\n\n" + "\n".join(lines) + "\n"
