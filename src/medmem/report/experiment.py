"""`medmem report experiment`: one experiment (config key `experiment` on several generators) as a
figure, a table and its finding in one sentence, all computed from the generators' summary rows.

An experiment is a set of dataset × generator rows (row.json of `medmem report figures`, see
`medmem.report.summary.summary_row`), each at one value x of the experiment's variable (kimg, subjects,
"ddim 50", ε, base width). Memorization is the share of samples above the held-out 99th percentile
(`share_above_holdout_p99`, 0–1) and the mean highest correlation (`corr_mean`, Pearson r); quality is
the Fréchet distance and KID in the copy detector's feature space (`fd_encoder`, `kid_encoder`) when
any row has them, else Inception's FID and KID (`fid`, `kid`): one family for the whole experiment,
never both on one axis.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from medmem.errors import InputError
from medmem.io import atomic_output, write_csv

CANNOT_JUDGE = "cannot judge"  # medmem.memorization.verdict.CANNOT_JUDGE
SHARE, MEAN_R = "share_above_holdout_p99", "corr_mean"
QUALITY = {"encoder": ("fd_encoder", "kid_encoder", "FD (copy detector's encoder)", "KID (copy detector's encoder)"),
           "inception": ("fid", "kid", "FID (Inception)", "KID (Inception)")}
TABLE_COLUMNS = ["x", "dataset", "model", "label", "type", "n_samples", SHARE, MEAN_R, "holdout_p99",
                 "holdout_mean", "sampler", "verdict"]
TREND = 0.7  # |Spearman ρ| of a quantity against x at or above which it "rises" / "falls"


def parse_x(values) -> list:
    """x values as given on the command line: all numbers (float) when every one is a number, else the
    texts as given (categories, in the order given)."""
    texts = [str(v) for v in values]
    try:
        numbers = [float(v) for v in texts]
    except ValueError:
        return texts
    return numbers if all(math.isfinite(v) for v in numbers) else texts


def quality_family(rows: pd.DataFrame) -> str | None:
    """'encoder' when any row has a finite fd_encoder, else 'inception' when any has a finite FID, else None."""
    for family, (fd, _, _, _) in QUALITY.items():
        if fd in rows and pd.to_numeric(rows[fd], errors="coerce").notna().any():
            return family
    return None


def experiment_table(rows: list[dict], xs: list) -> pd.DataFrame:
    """One line per row (a dataset × generator summary row) with its x, sorted by dataset then x
    (numbers ascending; categories in the order given); quality columns of one family only, and DP-SGD's
    `dp_epsilon`, `dp_delta` (the accountant's, per training image) when any row has them.

    Raises InputError when rows and x values differ in number or a row lacks the memorization columns.
    """
    if len(rows) != len(xs) or not rows:
        raise InputError(f"experiment: {len(rows)} rows but {len(xs)} x values (one x per row, at least one)")
    for row in rows:
        missing = [c for c in ("dataset", "model", SHARE, MEAN_R) if c not in row]
        if missing:
            raise InputError(f"experiment: the row of {row.get('dataset', '?')} × {row.get('model', '?')} lacks "
                             f"{', '.join(missing)} (not a row.json of medmem report figures)")
    table = pd.DataFrame(rows)
    table.insert(0, "x", list(xs))
    table["order"] = range(len(table))
    for column in TABLE_COLUMNS:
        if column not in table:
            table[column] = np.nan if column not in ("label", "type", "sampler", "verdict") else ""
    table["label"] = [lab if isinstance(lab, str) and lab else model for lab, model in zip(table["label"],
                                                                                           table["model"])]
    family = quality_family(table)
    quality = list(QUALITY[family][:2]) if family else []
    numeric = all(_is_number(x) for x in xs)
    datasets = list(dict.fromkeys(table["dataset"]))
    table["dataset_order"] = 0 if across_datasets(table) else table["dataset"].map(datasets.index)
    table = table.sort_values(["dataset_order", "x" if numeric else "order"], kind="stable")
    private = [c for c in ("dp_epsilon", "dp_delta") if c in table and pd.to_numeric(table[c], errors="coerce")
               .notna().any()]  # DP-SGD points: the accountant's ε and δ beside the target in x
    return table[TABLE_COLUMNS + quality + private].reset_index(drop=True)


def across_datasets(table: pd.DataFrame) -> bool:
    """True when the experiment's points are different datasets, one row per x (as in a dataset-size
    experiment, where each point is its own cut of the data): one series across them, not one per
    dataset. Their FD / FID are then left out of the finding and the figure: each dataset's copy
    detector has its own feature space, so its FD is not comparable across datasets."""
    return table["dataset"].nunique() > 1 and not table["x"].map(_x_text).duplicated().any()


def _series(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(name, rows) per series: one per dataset, or a single unnamed one (`across_datasets`)."""
    if across_datasets(table) or table["dataset"].nunique() == 1:
        return [("", table)]
    return [(dataset, table[table["dataset"] == dataset]) for dataset in dict.fromkeys(table["dataset"])]


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _x_text(x) -> str:
    return f"{x:g}" if _is_number(x) else str(x)


def _pct(share: float) -> str:
    value = share * 100
    return f"{value:.0f} %" if value == 0 or value >= 10 else f"{value:.1f} %"


def _spearman(xs, ys) -> float:
    x, y = pd.Series(xs, dtype=float).rank(), pd.Series(ys, dtype=float).rank()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _describe(what: str, xs, values, numeric: bool, axis: str, fmt) -> str:
    """One clause: how `values` (finite ones) change over x."""
    keep = [(x, v) for x, v in zip(xs, values) if v is not None and np.isfinite(v)]
    if not keep:
        return f"{what} not computed"
    at = (lambda x: f"{axis} {_x_text(x)}") if axis else _x_text
    if len(keep) == 1:
        return f"{what} is {fmt(keep[0][1])} at {at(keep[0][0])}"
    (x0, v0), (x1, v1) = keep[0], keep[-1]
    if all(fmt(v) == fmt(v0) for _, v in keep):
        return f"{what} stays at {fmt(v0)} from {at(x0)} to {at(x1)}"
    if not numeric:
        lo = min(keep, key=lambda p: p[1])
        hi = max(keep, key=lambda p: p[1])
        return f"{what} ranges from {fmt(lo[1])} ({at(lo[0])}) to {fmt(hi[1])} ({at(hi[0])})"
    rho = _spearman([x for x, _ in keep], [v for _, v in keep]) if len(keep) > 2 else float(np.sign(v1 - v0))
    if rho >= TREND and v1 > v0:
        return f"{what} rises from {fmt(v0)} at {at(x0)} to {fmt(v1)} at {at(x1)}"
    if rho <= -TREND and v1 < v0:
        return f"{what} falls from {fmt(v0)} at {at(x0)} to {fmt(v1)} at {at(x1)}"
    lo, hi = min(v for _, v in keep), max(v for _, v in keep)
    return (f"{what} shows no clear trend with {axis or 'x'} ({fmt(v0)} at {at(x0)}, {fmt(v1)} at {at(x1)}, "
            f"between {fmt(lo)} and {fmt(hi)})")


def finding(table: pd.DataFrame, axis: str = "") -> str:
    """The experiment's finding in one sentence, computed from `experiment_table`'s numbers: per dataset,
    how the share above the held-out p99 and the mean highest correlation (and FD or FID, when computed)
    change with x ('rises'/'falls' when |Spearman ρ| ≥ 0.7 and the last value is above/below the first;
    'shows no clear trend' otherwise; for categories, the lowest and highest), and which rows cannot be
    judged (their samples do not yet look like real images)."""
    numeric = all(_is_number(x) for x in table["x"])
    quality = [] if across_datasets(table) else [c for c in ("fd_encoder", "fid") if c in table]
    parts = []
    series = _series(table)
    for dataset, sub in series:
        xs = list(sub["x"])
        clauses = [_describe("share above the held-out p99", xs, sub[SHARE].astype(float), numeric, axis, _pct),
                   _describe("mean r", xs, sub[MEAN_R].astype(float), numeric, axis, lambda v: f"{v:.2f}")]
        for column in quality:
            name = "FD (encoder)" if column == "fd_encoder" else "FID"
            values = pd.to_numeric(sub[column], errors="coerce")
            if values.notna().any():
                clauses.append(_describe(name, xs, values, numeric, axis, lambda v: f"{v:.3g}"))
        unjudged = sub[sub["verdict"] == CANNOT_JUDGE]
        if len(unjudged):
            names = ", ".join(f"{m} ({axis + ' ' if axis else ''}{_x_text(x)})"
                              for m, x in zip(unjudged["label"], unjudged["x"]))
            clauses.append(f"cannot judge {names}: samples not yet like real images")
        prefix = f"{dataset}: " if dataset else ""
        parts.append(prefix + "; ".join(clauses))
    if across_datasets(table) and any(c in table for c in ("fd_encoder", "fid")):
        parts[-1] += " (FD not compared: each dataset's copy detector has its own feature space)"
    sentence = ". ".join(parts)
    return (sentence if len(series) > 1 else sentence[0].upper() + sentence[1:]) + "."


def experiment_figure(table: pd.DataFrame, name: str, axis: str, sentence: str):
    """x on the horizontal axis; share above the held-out p99 and mean highest r (0–1) on the left
    axis, FD or FID (one family, `quality_family`) on the right, one line style per dataset; rows that
    cannot be judged drawn hollow. The title holds the experiment's name and its finding. Returns the
    matplotlib figure."""
    import textwrap

    from medmem.report import figures

    plt = figures.plt
    numeric = all(_is_number(x) for x in table["x"])
    categories = list(dict.fromkeys(_x_text(x) for x in table["x"]))
    fig, left = plt.subplots(figsize=(7.5, 4.8))
    right = None
    family = "encoder" if "fd_encoder" in table else ("inception" if "fid" in table else None)
    if across_datasets(table):
        family = None  # one detector per dataset: its FD is not comparable across them
    styles = ["-", "--", ":", "-."]
    for i, (dataset, sub) in enumerate(_series(table)):
        xs = sub["x"].astype(float).to_numpy() if numeric else np.array([categories.index(_x_text(x))
                                                                         for x in sub["x"]])
        hollow = (sub["verdict"] == CANNOT_JUDGE).to_numpy()
        suffix = f" ({dataset})" if dataset else ""
        series = [(SHARE, "share above held-out p99", "#d62728", "o", left),
                  (MEAN_R, "mean highest r", "#1f77b4", "s", left)]
        if family:
            fd = QUALITY[family][0]
            values = pd.to_numeric(sub[fd], errors="coerce")
            if values.notna().any():
                right = right or left.twinx()
                series.append((fd, QUALITY[family][2], "#2ca02c", "^", right))
        for column, text, colour, marker, ax in series:
            ys = pd.to_numeric(sub[column], errors="coerce").to_numpy(float)
            ax.plot(xs, ys, styles[i % len(styles)], color=colour, label=text + suffix)
            ax.scatter(xs[~hollow], ys[~hollow], color=colour, marker=marker, zorder=3)
            ax.scatter(xs[hollow], ys[hollow], facecolors="white", edgecolors=colour, marker=marker, zorder=3,
                       label=f"{text}{suffix}: cannot judge" if hollow.any() else None)
    left.set_ylim(-0.02, 1.02)
    left.set_ylabel("share above held-out p99 / mean highest r")
    left.set_xlabel(axis or "x")
    if not numeric:
        left.set_xticks(range(len(categories)), categories, rotation=20)
    if right is not None:
        right.set_ylabel(QUALITY[family][2])
    handles, labels = left.get_legend_handles_labels()
    if right is not None:
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    left.legend(handles, labels, fontsize=7, loc="best")
    left.set_title(f"{name}\n" + "\n".join(textwrap.wrap(sentence, 95)), fontsize=8)
    return fig


def markdown(table: pd.DataFrame, name: str, sentence: str) -> str:
    """The table as Markdown under the experiment's name, with the finding below it."""
    def cell(value, column):
        if isinstance(value, float):
            if not np.isfinite(value):
                return "–"
            return _pct(value) if column == SHARE else f"{value:.3g}"
        return str(value)

    lines = [f"# Experiment: {name}", "", "| " + " | ".join(table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v, c) for v, c in zip(row, table.columns)) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines + ["", f"Finding: {sentence}", ""])


def report_experiment(name: str, axis: str, rows, xs, figure, table_csv, table_md) -> str:
    """`medmem report experiment`: read the row.json files `rows` (one per dataset × generator of the
    experiment, in config order) with their x values `xs` (texts: numbers when all are numbers), write
    the figure (PNG), the table (CSV; its last column `finding` holds the sentence on every line) and the
    Markdown table with the finding; returns the finding. Raises InputError for a missing or invalid
    row file, or rows and x values that differ in number."""
    from medmem.report import figures

    loaded = []
    for path in rows:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file does not exist")
        try:
            loaded.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg})") from None
    table = experiment_table(loaded, parse_x(xs))
    sentence = finding(table, axis)
    figures.save(experiment_figure(table, name, axis, sentence), figure)
    write_csv(table.assign(experiment=name, finding=sentence), table_csv)
    with atomic_output(table_md) as tmp:
        Path(tmp).write_text(markdown(table, name, sentence))
    return sentence
