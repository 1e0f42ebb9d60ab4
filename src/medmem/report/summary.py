"""One row of the summary table per dataset × model, and the table itself (CSV and Markdown).

Correlations are those of the *lead channel*: the first channel (T1 for BraTS, the radiograph
for chest x-rays), named in the `channel` column. FID, KID and IS are channel means. The Markdown
table states that its IS is not the study's in value (`IS_NOTE`) and that constant training images
are skipped where the study's script would give NaN (`CONSTANT_NOTE`). `verdict` (one of
`medmem.memorization.verdict.VERDICTS`) and `verdict_text` come from `verdict.judge` on the lead
view: "cannot judge" when the samples do not yet look like real images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medmem.io import atomic_output, write_csv
from medmem.memorization.calibration import THRESHOLDS
from medmem.memorization.verdict import LOW_QUANTILE, judge

IS_NOTE = ("IS (`is`, `is_1split`): torch-fidelity's Inception (1,008 logits, bilinear resize to 299²): "
           "not comparable in value with the study's Keras script (1,000-class softmax, nearest-neighbour "
           "resize, one split), which ranks models the same")
CONSTANT_NOTE = ("Correlations skip constant training images (e.g. empty segmentations): the study's script "
                 "would give NaN for every synthetic image in that channel (np.argmax over a list holding NaN)")
COLUMNS = ["dataset", "model", "n_train", "n_samples", "channel", "corr_mean", "corr_median",
           "share_above_0.90", "share_above_0.95", "share_above_0.99", "holdout_p99", "share_above_holdout_p99",
           "holdout_mean", "planted_exact_detected", "planted_detected_min", "fid", "fid_note", "kid", "is",
           "is_1split", "sampler", "holdout_p05", "verdict", "verdict_text", "type", "label"]


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
    row["holdout_p05"] = verdict.holdout_low
    row["verdict"] = verdict.verdict
    row["verdict_text"] = verdict.sentence
    row["type"], row["label"] = model_type, label or model
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
    shown = [c for c in names if c not in ("fid_note", "sampler", "verdict_text", "type", "label")]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], c) for c in shown) + " |")
    notes = sorted({n for n in table["fid_note"] if isinstance(n, str) and n})
    text = "\n".join(lines) + "\n"
    verdicts = [f"- {row['dataset']} × {row['model']}: {row['verdict_text']}" for _, row in table.iterrows()
                if isinstance(row["verdict_text"], str) and row["verdict_text"]]
    if verdicts:
        text += "\nVerdict (lead channel):\n\n" + "\n".join(verdicts) + "\n"
    if notes:
        text += "\n" + "\n".join(f"- FID: {n}" for n in notes) + "\n"
    split_notes = [f"- {row['dataset']}: {row['split_note']}" for row in rows if row.get("split_note")]
    if split_notes:
        text += "\n" + "\n".join(dict.fromkeys(split_notes)) + "\n"
    text += f"\n- {IS_NOTE}.\n- {CONSTANT_NOTE}.\n"
    with atomic_output(md_path) as tmp:
        tmp.write_text(text)
    return table
