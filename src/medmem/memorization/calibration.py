"""What a highest correlation means: the held-out baseline and the planted-copy detection rates.

- Holdout baseline: the same search for real images of patients the generator never saw. Adjacent
  slices of one volume correlate above 0.95, so a raw threshold misleads without it.
- Planted copies: per perturbation, the share of copies whose r_max reaches each threshold
  (`detected`) and whose best match is the copied image (`source_matched`).
- False alarms: the share of held-out images at or above each threshold. For the holdout's own
  99th percentile this is cross-fitted: the threshold from one half of the held-out subjects,
  the rate measured on the other half, averaged over both ways.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

THRESHOLDS = (0.90, 0.95, 0.99)


def holdout_p99(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.quantile(values, 0.99)) if len(values) else float("nan")


def cross_fitted_false_alarm(r_max: np.ndarray, subjects: np.ndarray, seed: int = 0) -> float:
    """Held-out images at or above the p99 of the *other* half of the held-out subjects."""
    ok = np.isfinite(r_max)
    r_max, subjects = r_max[ok], subjects[ok]
    unique = np.unique(subjects)
    if len(unique) < 2:
        return float("nan")
    half = set(np.random.default_rng(seed).permutation(unique)[: len(unique) // 2])
    a = np.array([s in half for s in subjects])
    rates = [np.mean(r_max[~fold] >= holdout_p99(r_max[fold])) for fold in (a, ~a)]
    return float(np.mean(rates))


def calibrate(holdout: pd.DataFrame, holdout_subjects: pd.Series, planted: pd.DataFrame,
              manifest: pd.DataFrame, thresholds=THRESHOLDS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(detection table, holdout baseline table), one block per view."""
    rows, baseline = [], []
    planted = planted.merge(manifest, on="query", how="left", validate="many_to_one")
    for view, h in holdout.groupby("channel", sort=False):
        h = h.sort_values("query")
        r_h = h["r_max"].to_numpy(float)
        subjects = holdout_subjects.loc[h["query"].to_numpy()].to_numpy()
        p99 = holdout_p99(r_h)
        finite = r_h[np.isfinite(r_h)]
        baseline.append({"channel": view, "channel_name": h["channel_name"].iloc[0], "n_holdout": len(r_h),
                         "n_undefined": int((~np.isfinite(r_h)).sum()),
                         "mean": float(finite.mean()) if len(finite) else np.nan,
                         "median": float(np.median(finite)) if len(finite) else np.nan,
                         "p99": p99, "max": float(finite.max()) if len(finite) else np.nan})
        p = planted[planted["channel"] == view]
        levels = [(f"{t:.2f}", t, float(np.mean(finite >= t)) if len(finite) else np.nan) for t in thresholds]
        levels.append(("holdout_p99", p99, cross_fitted_false_alarm(r_h, subjects)))
        for name, group in p.groupby("perturbation", sort=False):
            defined = np.isfinite(group["r_max"].to_numpy(float))  # a constant copy has no r in this view
            r_p = group["r_max"].to_numpy(float)[defined]
            matched = (group["train_index"].to_numpy() == group["source_index"].to_numpy())[defined]
            for level, value, false_alarm in levels:
                hit = r_p >= value
                rows.append({"channel": view, "channel_name": h["channel_name"].iloc[0], "perturbation": name,
                             "threshold": level, "threshold_value": value, "n_planted": len(group),
                             "n_defined": int(defined.sum()),
                             "detected": float(hit.mean()) if len(hit) else np.nan,
                             "source_matched": float((hit & matched).mean()) if len(hit) else np.nan,
                             "false_alarm_holdout": false_alarm})
    return pd.DataFrame(rows), pd.DataFrame(baseline)


def _pct(x: float, digits: int = 0) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}%}"


def summary_markdown(detection: pd.DataFrame, baseline: pd.DataFrame, dataset: str) -> str:
    lines = [f"# Memorization calibration: {dataset}", "",
             "Held-out real images (patients never seen in training) set the baseline; planted copies of",
             "training images show what the search can and cannot detect.", "",
             "| view | held-out images | mean r_max | median | 99th percentile | max |", "|---|---|---|---|---|---|"]
    for b in baseline.itertuples():
        lines.append(f"| {b.channel_name} | {b.n_holdout} | {b.mean:.4f} | {b.median:.4f} | {b.p99:.4f} | {b.max:.4f} |")
    at_p99 = detection[detection["threshold"] == "holdout_p99"]
    names = list(dict.fromkeys(at_p99["channel_name"]))
    lines += ["", "Share of planted copies detected at the held-out 99th percentile, per view:", "",
              "| perturbation | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for perturbation, group in at_p99.groupby("perturbation", sort=False):
        cells = group.set_index("channel_name")["detected"]
        lines.append(f"| {perturbation} | " + " | ".join(_pct(cells.get(n, np.nan)) for n in names) + " |")
    false_alarm = at_p99.drop_duplicates("channel_name").set_index("channel_name")["false_alarm_holdout"]
    lines.append("| *false alarms on held-out* | " + " | ".join(_pct(false_alarm.get(n, np.nan), 1)
                                                          for n in names) + " |")
    lines += ["", "False alarms at the 99th percentile are cross-fitted by held-out subject (n/a with fewer",
              "than two held-out subjects).", "", "## Limits of the measure", ""]
    missed = at_p99[at_p99["detected"] < 0.5]
    if len(missed):
        for perturbation, group in missed.groupby("perturbation", sort=False):
            views = ", ".join(f"{d.channel_name} ({_pct(d.detected)})" for d in group.itertuples())
            lines.append(f"- **Not detected**: copies with `{perturbation}` mostly stay below the held-out 99th "
                         f"percentile in {views}. A generator that copies this way passes this audit unnoticed.")
    else:
        lines.append("- Every planted perturbation is detected in at least half the cases in every view.")
    return "\n".join(lines) + "\n"
