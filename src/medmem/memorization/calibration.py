"""What a highest correlation means: the held-out baseline and the planted-copy detection rates.

- Holdout baseline: the same search for real images of patients the generator never saw. Adjacent
  slices of one volume correlate above 0.95, so a raw threshold misleads without it.
- Planted copies: per perturbation, the share of copies whose r_max reaches each threshold
  (`detected`) and whose best match is the copied image (`source_matched`).
- False alarms: the share of held-out images at or above each threshold. For the holdout's own
  99th percentile this is cross-fitted: the threshold from one half of the held-out subjects,
  the rate measured on the other half, averaged over both ways.
- Combined verdict (issue 16): a sample is flagged when any of the combined views flags it. To keep
  its false-alarm rate at 1 % whatever the number of views, each view's r_max is standardised by its
  held-out distribution (s_v = (r − median) / (p99 − median): the view's own p99 maps to 1; an
  empirical CDF would tie every image above the held-out maximum at 1, so a small holdout could not
  separate them), and the *maximum over views* max_v s_v is calibrated: its threshold is the held-out
  99th percentile of that maximum (so each view flags at a stricter level than its own 99th
  percentile). The false-alarm rate is cross-fitted the same way: medians, p99s and threshold from
  one half of the held-out subjects, measured on the other half.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medmem.errors import InputError

THRESHOLDS = (0.90, 0.95, 0.99)  # fixed r thresholds reported beside the held-out p99 (not the study's)
COMBINED = "combined"  # the view name of the combined verdict in the detection and baseline tables


def wide(table: pd.DataFrame, column: str = "r_max") -> pd.DataFrame:
    """query × view of one column of a memorization table (views in table order).

    table: a memorization table (columns query, view, `column`); each (query, view) once. Returns a
    DataFrame indexed by query with one column per view. Raises ValueError for a repeated pair.
    """
    views = list(dict.fromkeys(table["view"].astype(str)))
    out = table.assign(view=table["view"].astype(str)).pivot(index="query", columns="view", values=column)
    return out[views]


def standard_scores(reference: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """Per view, (r − held-out median) / (held-out p99 − held-out median): each view's own 99th
    percentile maps to 1, its median to 0; continuous beyond the held-out range (a copy above every
    held-out image scores above 1). Undefined r scores −inf (never flags).

    reference, values: query × view r_max (same views). Returns values' shape, float64.
    """
    out = pd.DataFrame(-np.inf, index=values.index, columns=values.columns)
    for view in values.columns:
        ref = reference[view].to_numpy(float)
        ref = ref[np.isfinite(ref)]
        v = values[view].to_numpy(float)
        if len(ref):
            median = float(np.median(ref))
            scale = max(holdout_p99(ref) - median, 1e-12)
            out[view] = np.where(np.isfinite(v), (v - median) / scale, -np.inf)
    return out


def combined_threshold(holdout_wide: pd.DataFrame) -> float:
    """The held-out 99th percentile of the maximum over views of the standardised scores.

    holdout_wide: query × view r_max of the held-out images (`wide`). Returns a float (NaN when no
    held-out image has a defined r in any view).
    """
    return holdout_p99(standard_scores(holdout_wide, holdout_wide).max(axis=1).to_numpy())


def combined_scores(holdout_wide: pd.DataFrame, values: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(max over views of the standardised score, the view attaining it) per row of `values`.

    holdout_wide: query × view r_max of the held-out images; values: query × view r_max holding at least
    those views. Returns two Series indexed like `values`: float64 scores (−inf where no view is
    defined) and view names.
    """
    scores = standard_scores(holdout_wide, values[holdout_wide.columns])
    return scores.max(axis=1), scores.idxmax(axis=1)


def combined_false_alarm(holdout_wide: pd.DataFrame, subjects: np.ndarray, seed: int = 0) -> float:
    """Cross-fitted false-alarm rate of the combined verdict (medians, p99s and threshold from the other half).

    holdout_wide: query × view r_max; subjects: (n,) the subject of each row. The subjects are split in
    two halves by `default_rng(seed)`; returns the mean over both directions of the share flagged, in
    [0, 1], or NaN with fewer than two subjects.
    """
    unique = np.unique(subjects)
    if len(unique) < 2:
        return float("nan")
    half = set(np.random.default_rng(seed).permutation(unique)[: len(unique) // 2])
    a = np.array([s in half for s in subjects])
    rates = []
    for fold in (a, ~a):
        fit, test = holdout_wide[fold], holdout_wide[~fold]
        rates.append(np.mean(combined_scores(fit, test)[0].to_numpy() >= combined_threshold(fit)))
    return float(np.mean(rates))


def holdout_p99(values: np.ndarray) -> float:
    """The 99th percentile (numpy's linear interpolation) of the finite `values` (1-D float); NaN when none is."""
    values = values[np.isfinite(values)]
    return float(np.quantile(values, 0.99)) if len(values) else float("nan")


def cross_fitted_false_alarm(r_max: np.ndarray, subjects: np.ndarray, seed: int = 0) -> float:
    """Held-out images at or above the p99 of the *other* half of the held-out subjects.

    r_max: (n,) float, NaN dropped; subjects: (n,) the subject of each image. The subjects are split in
    two halves by `default_rng(seed)`; returns the mean over both directions of the share at or above
    the other half's p99, in [0, 1], or NaN with fewer than two subjects.
    """
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
              manifest: pd.DataFrame, thresholds=THRESHOLDS, combine=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(detection table, holdout baseline table), one block per view, then the combined verdict of the
    views named in `combine` that the tables hold (None: all views), when there are two or more.

    holdout: the held-out images' memorization table; holdout_subjects: subject per held-out query
    index (slices.csv's holdout rows); planted: the planted copies' memorization table; manifest:
    query, perturbation, source_index (`planted.plant_copies`); thresholds: r levels in [-1, 1].

    detection: one row per view × perturbation × threshold ("0.90", ..., "holdout_p99"): view,
    channel_name, perturbation, threshold, threshold_value, n_planted, n_defined, detected and
    source_matched (shares in [0, 1]), false_alarm_holdout (share of held-out images at or above the
    threshold; cross-fitted for holdout_p99; NaN with fewer than two subjects).
    baseline: one row per view: view, channel_name, n_holdout, n_undefined, mean, median, p99, max of
    the held-out r_max; the combined row holds standardised scores instead (p99: its threshold).
    """
    rows, baseline = [], []
    planted = planted.merge(manifest, on="query", how="left", validate="many_to_one")
    for view, h in holdout.groupby("view", sort=False):
        h = h.sort_values("query")
        r_h = h["r_max"].to_numpy(float)
        subjects = holdout_subjects.loc[h["query"].to_numpy()].to_numpy()
        p99 = holdout_p99(r_h)
        finite = r_h[np.isfinite(r_h)]
        baseline.append({"view": view, "channel_name": h["channel_name"].iloc[0], "n_holdout": len(r_h),
                         "n_undefined": int((~np.isfinite(r_h)).sum()),
                         "mean": float(finite.mean()) if len(finite) else np.nan,
                         "median": float(np.median(finite)) if len(finite) else np.nan,
                         "p99": p99, "max": float(finite.max()) if len(finite) else np.nan})
        p = planted[planted["view"] == view]
        levels = [(f"{t:.2f}", t, float(np.mean(finite >= t)) if len(finite) else np.nan) for t in thresholds]
        levels.append(("holdout_p99", p99, cross_fitted_false_alarm(r_h, subjects)))
        for name, group in p.groupby("perturbation", sort=False):
            defined = np.isfinite(group["r_max"].to_numpy(float))  # a constant copy has no r in this view
            r_p = group["r_max"].to_numpy(float)[defined]
            matched = (group["train_index"].to_numpy() == group["source_index"].to_numpy())[defined]
            for level, value, false_alarm in levels:
                hit = r_p >= value
                rows.append({"view": view, "channel_name": h["channel_name"].iloc[0], "perturbation": name,
                             "threshold": level, "threshold_value": value, "n_planted": len(group),
                             "n_defined": int(defined.sum()),
                             "detected": float(hit.mean()) if len(hit) else np.nan,
                             "source_matched": float((hit & matched).mean()) if len(hit) else np.nan,
                             "false_alarm_holdout": false_alarm})
    views = list(dict.fromkeys(holdout["view"].astype(str)))
    chosen = [v for v in views if combine is None or v in set(map(str, combine))]
    if len(chosen) > 1:
        pick = holdout["view"].astype(str).isin(chosen)
        c_rows, c_base = _combined(holdout[pick], holdout_subjects,
                                   planted[planted["view"].astype(str).isin(chosen)])
        rows += c_rows
        baseline.append(c_base)
    return pd.DataFrame(rows), pd.DataFrame(baseline)


def _combined(holdout, holdout_subjects, planted) -> tuple[list[dict], dict]:
    """Detection of the combined verdict (max over views of standardised scores) at its held-out p99."""
    h = wide(holdout)
    subjects = holdout_subjects.loc[h.index.to_numpy()].to_numpy()
    threshold = combined_threshold(h)
    false_alarm = combined_false_alarm(h, subjects)
    p = wide(planted)
    score, lead = combined_scores(h, p)
    index = wide(planted, "train_index")
    info = planted.drop_duplicates("query").set_index("query")
    h_score = combined_scores(h, h)[0].to_numpy()
    rows = []
    for name, queries in info.groupby("perturbation", sort=False).groups.items():
        s = score.loc[queries].to_numpy()
        hit = s >= threshold
        matched = np.array([index.loc[q, lead.loc[q]] == info.loc[q, "source_index"] for q in queries])
        rows.append({"view": COMBINED, "channel_name": COMBINED, "perturbation": name,
                     "threshold": "holdout_p99", "threshold_value": threshold, "n_planted": len(queries),
                     "n_defined": len(queries), "detected": float(hit.mean()),
                     "source_matched": float((hit & matched).mean()), "false_alarm_holdout": false_alarm})
    base = {"view": COMBINED, "channel_name": COMBINED + " (" + ", ".join(h.columns) + ")",
            "n_holdout": len(h), "n_undefined": 0,
            "mean": float(h_score.mean()), "median": float(np.median(h_score)), "p99": threshold,
            "max": float(h_score.max())}
    return rows, base


def _pct(x: float, digits: int = 0) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}%}"


def summary_markdown(detection: pd.DataFrame, baseline: pd.DataFrame, dataset: str) -> str:
    """calibration.md: the baseline per view, the share of planted copies detected at the held-out p99,
    the perturbations mostly missed, and the combined verdict; `detection`, `baseline` as `calibrate`
    returns them."""
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
    combined = at_p99[at_p99["view"] == COMBINED]
    if len(combined):
        fa = combined["false_alarm_holdout"].iloc[0]
        lines += ["", "## Combined verdict", "",
                  f"Views combined: {baseline['channel_name'].iloc[-1].removeprefix(COMBINED + ' (')[:-1]}. "
                  "A sample is flagged when any",
                  "of them flags it; the maximum over views of each view's standardised score ((r − held-out",
                  "median) / (held-out p99 − median)) is calibrated at its held-out 99th percentile (threshold "
                  f"{combined['threshold_value'].iloc[0]:.3f}), so its false-alarm rate does not grow with the "
                  f"number of views (measured cross-fitted on held-out subjects: {_pct(fa, 1)}).",
                  f"With {int(baseline['n_holdout'].iloc[-1])} held-out images a 1 % rate rests on about "
                  f"{int(baseline['n_holdout'].iloc[-1]) / 100:.1f} images, and the cross-fitted rate on "
                  "half as many subjects: a small holdout can only bound it loosely.", ""]
        short = combined[combined["detected"] < 0.95]
        if len(short):
            for d in short.itertuples():
                lines.append(f"- **Below 95 %**: `{d.perturbation}` copies are flagged in {_pct(d.detected)}.")
        else:
            lines.append("- Every planted perturbation is flagged in at least 95 % of the cases.")
    return "\n".join(lines) + "\n"


def run_calibrate(slices, holdout, planted, manifest, output, *, baseline=None, summary=None, dataset=None,
                  extra_holdout=(), extra_planted=(), thresholds=THRESHOLDS, combine=None) -> pd.DataFrame:
    """`medmem calibrate`: detection rates (`output`, .csv), the held-out baseline (`baseline`, default
    holdout_baseline.csv beside `output`) and a readable summary (`summary`, default `output` as .md).

    `slices`: the dataset's slices.csv (or its folder), naming each held-out image's subject;
    `holdout`, `planted`: memorization tables (.parquet); `extra_holdout`/`extra_planted`: more views of
    the same images (one table each, in pairs); `manifest`: the planted copies' .csv. Returns the
    detection table. Raises InputError for unpaired extra tables or unreadable files.
    """
    from medmem.io import atomic_output, dataset_files, write_csv
    from medmem.memorization.table import read_table

    slices_path = dataset_files(slices).slices if Path(slices).suffix != ".csv" else Path(slices)
    if not slices_path.is_file():
        raise InputError(f"{slices_path}: slices table does not exist")
    rows = pd.read_csv(slices_path, dtype={"subject": str})
    holdout_subjects = rows[rows["split"] == "holdout"].set_index("index")["subject"]
    if len(extra_holdout) != len(extra_planted):
        raise InputError("--extra-holdout and --extra-planted need one table each per added view set")
    held = pd.concat([read_table(p)[0] for p in [holdout, *extra_holdout]], ignore_index=True)
    planted_table = pd.concat([read_table(p)[0] for p in [planted, *extra_planted]], ignore_index=True)
    detection, base = calibrate(held, holdout_subjects, planted_table, pd.read_csv(manifest), tuple(thresholds),
                                combine=combine)
    output = Path(output)
    write_csv(detection, output)
    write_csv(base, baseline or output.with_name("holdout_baseline.csv"))
    with atomic_output(Path(summary or output.with_suffix(".md"))) as tmp:
        tmp.write_text(summary_markdown(detection, base, dataset or slices_path.parent.name))
    return detection
