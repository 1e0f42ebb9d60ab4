"""The audit's report: one self-contained HTML file (figures embedded as data URIs, no external
resource: it opens offline) written for readers who sign off on sharing synthetic images."""

from __future__ import annotations

import base64
import datetime
import html as _html
from pathlib import Path

import numpy as np
import pandas as pd

import medmem
from medmem.memorization.verdict import CANNOT_JUDGE, LOW_QUANTILE
from medmem.report import figures

CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.7em}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left}th{background:#f3f3f3}.verdict{padding:.6em 1em;margin:.5em 0;border-left:6px solid #888;
background:#fafafa}.alarm{border-color:#d62728;background:#fff3f3}.ok{border-color:#2ca02c;background:#f3fff3}
.missing,.warn{border-color:#ff7f0e;background:#fff8ef}.wide{overflow-x:auto}img{max-width:100%;border:1px solid #eee}
code{font-size:.9em;word-break:break-all}.note{color:#555;font-size:.92em}"""


def pair_figure(table: pd.DataFrame, samples: np.ndarray, train: np.ndarray, train_rows: pd.DataFrame, view: str,
                k: int, rows: pd.DataFrame):
    """The k samples closest to a training image in one channel view: the training image, the sample,
    their absolute difference, the pixel scatter, and the matched subject's neighbouring slices
    (adjacent slices are near-duplicates in 3-D data). File names as given label each row."""
    import matplotlib.pyplot as plt

    best = table[table["view"] == view].dropna(subset=["r_max"]).sort_values("r_max", ascending=False).head(k)
    c = int(view)
    named = rows[rows["view"] == view].reset_index(drop=True)
    n = max(len(best), 1)
    fig, axes = plt.subplots(n, 6, figsize=(15, 2.7 * n), squeeze=False)
    for j, head in enumerate(["training image (best match)", "synthetic sample", "difference |sample − training|",
                              "pixel intensities", "previous slice", "next slice"]):
        axes[0, j].set_title(head, fontsize=9)
    for i, (_, row) in enumerate(best.iterrows()):
        t_idx, q_idx = int(row["train_index"]), int(row["query"])
        real, fake = np.asarray(train[t_idx, c]), np.asarray(samples[q_idx, c])
        axes[i, 0].imshow(real, cmap="gray", vmin=0, vmax=255)
        axes[i, 1].imshow(fake, cmap="gray", vmin=0, vmax=255)
        axes[i, 2].imshow(np.abs(real.astype(np.int16) - fake.astype(np.int16)), cmap="magma", vmin=0, vmax=255)
        ax = axes[i, 3]
        ax.scatter(real.ravel(), fake.ravel(), s=1, alpha=0.3, color="black", rasterized=True)
        ax.plot([0, 255], [0, 255], color=figures.HOLDOUT_COLOUR, linewidth=0.8)
        ax.set_xlim(0, 255)
        ax.set_ylim(0, 255)
        ax.set_xlabel("training pixel (0–255)", fontsize=7)
        ax.set_ylabel("synthetic pixel (0–255)", fontsize=7)
        ax.tick_params(labelsize=6)
        sample_name = named.loc[q_idx, "sample"] if q_idx in named.index else str(q_idx)
        train_name = named.loc[q_idx, "train_name"] if q_idx in named.index else str(t_idx)
        axes[i, 0].set_xlabel(_short(train_name), fontsize=7)
        axes[i, 1].set_xlabel(_short(sample_name), fontsize=7)
        axes[i, 0].set_ylabel(f"r = {row['r_max']:.4f}", fontsize=9)
        slice_ = row["slice"]
        for j, step in ((4, -1), (5, 1)):
            hit = None
            if pd.notna(slice_):
                hit = figures._neighbour(train_rows, str(row["subject"]), int(slice_), step)
            if hit is None:
                axes[i, j].text(0.5, 0.5, "no neighbouring\ntraining slice", ha="center", va="center", fontsize=8)
                axes[i, j].set_facecolor("#f0f0f0")
            else:
                axes[i, j].imshow(train[hit, c], cmap="gray", vmin=0, vmax=255)
                r = np.corrcoef(np.asarray(train[hit, c]).ravel().astype(float), fake.ravel().astype(float))[0, 1]
                axes[i, j].set_xlabel(f"slice {int(slice_) + step}, r = {r:.3f}", fontsize=7)
        for j in (0, 1, 2, 4, 5):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    if not len(best):
        axes[0, 0].text(0.5, 0.5, "no defined correlations", ha="center")
    name = best["channel_name"].iloc[0] if len(best) else view
    fig.suptitle(f"{name}: the {len(best)} samples most correlated with a training image")
    fig.tight_layout()
    return fig


def _short(name, width: int = 40) -> str:
    name = str(name)
    return name if len(name) <= width else "…" + name[-width + 1:]


def _e(x) -> str:
    return _html.escape(str(x))


def _pct(x, digits: int = 1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f} %"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _verdict_html(v, has_holdout: bool) -> str:
    html = _verdict_body(v, has_holdout)
    if has_holdout and str(v.get("concentrated", False)) == "True":
        html = html[:-len("</div>")] + (
            f"<br><b>Also: {_pct(v.top_match_share)} of the samples have one and the same nearest training image</b> "
            f"(real unseen patients' images: at most {_pct(v.holdout_top_match_share)}), and only "
            f"{int(v.matched_train_images)} training images are nearest to any sample. The generator covers few "
            "training images (mode collapse), so the counts above describe those few: look at the closest pairs "
            "below.</div>")
    return html


def _verdict_body(v, has_holdout: bool) -> str:
    name = _e(v.channel_name)
    if not has_holdout:
        return (f'<div class="verdict missing"><b>{name}: no verdict (baseline missing).</b> The highest correlation of '
                f"the {v.n_defined} samples has median {v.r_max_median:.3f} and maximum {v.r_max_max:.3f}; "
                f"{v['n_above_0.95']} reach 0.95. Without real images of unseen patients there is no way to say whether "
                "that is more than a new patient's image would reach.</div>")
    if v.get("verdict") == CANNOT_JUDGE:
        copies = ""
        if v.n_above:
            copies = (f" Still, {v.n_above} of {v.n_defined} samples reach the held-out 99th percentile "
                      f"{v.holdout_p99:.4f}: an immature generator may copy too, so look at the closest pairs below.")
        return (f'<div class="verdict {"alarm" if v.n_above else "missing"}"><b>{name}: cannot judge: the samples do '
                "not yet look like real images.</b> Half of them come less close to every training image (median "
                f"highest correlation {v.r_max_median:.3f}) than {100 - 100 * LOW_QUANTILE:g} in 100 images of real "
                f"patients never seen in training do (held-out {100 * LOW_QUANTILE:g}th percentile "
                f"{v.holdout_p05:.3f}). The generator has not yet learned what the images look like, so how many "
                "samples resemble training images says nothing about whether it memorizes: train it longer (or "
                "check that these are its final samples) and audit again."
                f"{copies}<br><span class='note'>In short: {_e(v.verdict_text)}.</span></div>")
    share = f"{v.n_above} of {v.n_defined} samples ({_pct(v.share_above)})"
    base = (f"reach a correlation with some training image of at least {v.holdout_p99:.4f}, which only 1 in 100 "
            "images of real patients never seen in training reach. ")
    if np.isfinite(v.false_alarm):
        base += (f"On unseen patients' images this threshold raises a false alarm {_pct(v.false_alarm)} of the time "
                 f"(measured on patients not used to set it), so about {v.expected_by_chance:.1f} samples would reach "
                 "it by chance")
    else:
        base += (f"Its false-alarm rate cannot be measured (fewer than two held-out subjects); at the 1 % the "
                 f"percentile implies, about {v.expected_by_chance:.1f} samples would reach it by chance")
    if v.n_above and np.isfinite(v.p_value) and v.p_value < 0.01:
        return (f'<div class="verdict alarm"><b>{name}: more samples resemble training images than chance explains.'
                f"</b> {share} {base} (probability of {v.n_above} or more by chance: {v.p_value:.2g}). "
                "Look at the closest pairs below before sharing these samples.</div>")
    if v.n_above_holdout_max:
        return (f'<div class="verdict warn"><b>{name}: {v.n_above_holdout_max} sample(s) are closer to a training image '
                f"than any real unseen patient's image came</b> (above the held-out maximum {v.holdout_max:.4f}; "
                f"highest sample: {v.r_max_max:.4f}). {share} {base}, so the count as a whole is within chance, but "
                "look at the closest pairs below: single samples this close may be copies.</div>")
    return (f'<div class="verdict ok"><b>{name}: no more samples resemble training images than real unseen patients '
            f"do.</b> {share} {base}. This does not exclude copies the measure cannot see (see below).</div>")


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>"


def _limits(detection: pd.DataFrame, has_holdout: bool) -> str:
    level = "holdout_p99" if has_holdout else "0.95"
    at = detection[detection["threshold"] == level]
    if not len(at):
        return "<p>No planted-copy results.</p>"
    pivot = at.pivot_table(index="perturbation", columns="channel_name", values="detected", sort=False)
    pivot = pivot.reindex(index=list(dict.fromkeys(at["perturbation"])),
                          columns=list(dict.fromkeys(at["channel_name"])))
    shown = pivot.map(lambda x: _pct(x, 0)).reset_index()
    text = {"exact": "exact copies", "noise": "copies with noise (σ = 5 grey levels)",
            "shift_1px": "copies shifted by 1 pixel", "shift_2px": "copies shifted by 2 pixels",
            "brightness_contrast": "copies with brightness and contrast changed", "flip": "mirror-image copies"}
    lines = []
    for perturbation, group in at.groupby("perturbation", sort=False):
        missed = group[group["detected"] < 0.5]
        if len(missed):
            lines.append(f"<li><b>Not seen</b>: {_e(text.get(perturbation, perturbation))} mostly stay below the "
                         f"threshold in {_e(', '.join(missed['channel_name']))}. A generator that copies this way "
                         "passes this audit unnoticed.</li>")
    if not lines:
        lines.append("<li>Every kind of planted copy is detected at least half the time in every view.</li>")
    where = ("the held-out 99th percentile (the threshold of the verdicts)" if has_holdout else
             "r ≥ 0.95 (no held-out set: no data-driven threshold)")
    return (f"<p>Copies of training images were planted among the queries, exactly and altered, and searched like the "
            f"samples. Share of planted copies detected at {where}:</p>{_table(shown)}<ul>{''.join(lines)}</ul>")


def _fingerprints(sets: dict) -> str:
    rows = []
    for name, s in sets.items():
        c, h, w = s.shape
        rows.append({"set": name, "source": str(s.source), "format": s.format, "images": s.n_images,
                     "channels": ", ".join(s.channels), "size (W×H)": f"{w}×{h}", "files": len(s.fingerprints),
                     "bytes": int(s.fingerprints["bytes"].sum()), "SHA-256 of the set": s.sha256})
    return _table(pd.DataFrame(rows))


def render(*, sets: dict, verdict: pd.DataFrame, detection: pd.DataFrame, baseline: pd.DataFrame, figures: dict,
           channel_names: list[str], has_holdout: bool, settings: dict, command: str = "") -> str:
    """The report as one HTML string (see the module doc).

    sets: `images.Imported` per set ("train", "samples", optionally "holdout"); verdict: verdict.csv's
    table (`run.verdicts`); detection, baseline: as `calibration.calibrate` returns them; figures:
    {name: PNG path} embedded as base64; channel_names: the channels' names; has_holdout: whether a
    held-out set was given; settings: the audit's settings, shown as a table; command: the command
    line to repeat the audit.
    """
    n_samples, n_train = sets["samples"].n_images, sets["train"].n_images
    channel_views = verdict[verdict["view"].str.isdigit()]
    combined = verdict[~verdict["view"].str.isdigit()]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Memorization audit</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Memorization audit of synthetic images</h1>",
             f"<p>{n_samples} synthetic images were compared with each of {n_train} training images, pixel by pixel, "
             "channel by channel. For every synthetic image the report finds the training image it resembles most: "
             "the highest Pearson correlation (1 = identical up to brightness and contrast, 0 = unrelated), the "
             "measure of Akbar, Wang and Eklund (2025). The search is exhaustive and exact.</p>"]
    if has_holdout:
        parts.append(f"<p>What is high? {sets['holdout'].n_images} real images of patients the generator never saw "
                     "were searched the same way: they show how close a new, genuine image gets to the training set "
                     "by chance (neighbouring slices and similar anatomy correlate highly). A sample above what 99 % "
                     "of these reach is a candidate copy.</p>")
    else:
        parts.append("<div class='verdict missing'><b>Baseline missing: no held-out images were given.</b> Without "
                     "real images of patients the generator never saw, there is no measure of how close a genuine new "
                     "image comes to the training set, so no correlation can be called too high (adjacent slices of "
                     "one brain correlate above 0.95). The counts below are reported without a verdict; rerun with "
                     "<code>--holdout</code> to get one.</div>")
    parts.append("<h2>Verdict per channel</h2>")
    parts += [_verdict_html(v, has_holdout) for _, v in channel_views.iterrows()]
    show = ["channel_name", "n_samples", "n_defined", "r_max_median", "r_max_max", "n_above_0.90", "n_above_0.95",
            "n_above_0.99"] + (["holdout_p99", "n_above", "false_alarm", "expected_by_chance", "p_value",
                                "holdout_max", "n_above_holdout_max", "holdout_p05", "verdict"]
                               if has_holdout else [])
    table = verdict[show].rename(columns={"channel_name": "view", "n_above": "n_above_holdout_p99"})
    parts.append("<p class='note'>All views, including the combined ones (<code>mr_mean</code>: correlation averaged "
                 "over the MR channels; <code>all</code>: all channels as one image):</p>"
                 + _table(table.round(4)))
    if len(combined):
        parts.append("<p class='note'>Constant images (an empty segmentation) have no correlation; they are not "
                     "counted in <code>n_defined</code>.</p>")
    title = "How the samples compare with real unseen patients" if has_holdout else "How close the samples come"
    parts += [f"<h2>{title}</h2>", _img(figures["histogram"], "histograms"),
              "<p class='note'>Bars: the synthetic samples' highest correlations. Grey line: real held-out images. "
              "Dashed: the held-out 99th percentile.</p>", "<h2>The closest pairs</h2>",
              "<p>Per channel, the samples most correlated with a training image: the training image, the sample, "
              "their difference (dark: equal), and each pixel of one against the other (a copy lies on the "
              "diagonal). The matched patient's neighbouring slices show how close real anatomy of the same "
              "patient comes.</p>"]
    parts += [_img(figures[f"pairs_{name}"], f"closest pairs {name}") for name in channel_names]
    parts += ["<h2>What the measure cannot see</h2>", _limits(detection, has_holdout),
              "<h2>Samples beside training images</h2>", _img(figures["samples"], "samples"),
              "<h2>Inputs (cite these)</h2>",
              "<p>Every input file's SHA-256 is in <code>fingerprints.csv</code>; the set's hash below is the SHA-256 "
              "of its sorted lines <code>relative path, NUL, file SHA-256, newline</code>.</p>", _fingerprints(sets),
              "<p class='note'>"
              + _e(f"medmem {medmem.__version__}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
                   + ", ".join(f"{k} = {v}" for k, v in settings.items())) + "</p>"]
    if command:
        parts.append(f"<p class='note'>Command: <code>{_e(command)}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
