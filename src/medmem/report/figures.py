"""The study's figures, one function per figure, each from plain arrays and tables.

Colours are fixed per model across every figure; held-out real images are always grey.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medmem.io import atomic_output, kimg_text  # noqa: E402
from medmem.memorization.verdict import CANNOT_JUDGE  # noqa: E402

MODEL_COLOURS = {"stylegan2": "#1f77b4", "diffusion": "#d62728", "external": "#2ca02c"}
# shades per generator type: the first instance of a type takes its base colour, the next ones these
TYPE_SHADES = {"stylegan2": ["#1f77b4", "#08519c", "#6baed6", "#9ecae1"],
               "diffusion": ["#d62728", "#a50f15", "#fb6a4a", "#fcbba1"],
               "external": ["#2ca02c", "#006d2c", "#74c476", "#c7e9c0"]}
HOLDOUT_COLOUR = "#7f7f7f"
UNJUDGED_COLOUR = "#e6e6e6"  # a generator that cannot be judged yet (hatched)
MODEL_LABELS = {"stylegan2": "StyleGAN2", "diffusion": "Diffusion"}
R_LABEL = "highest Pearson r with any training image"


def colour(model_type: str) -> str:
    """The base colour of a generator type (any other name: the external generators' green)."""
    return MODEL_COLOURS.get(model_type, MODEL_COLOURS["external"])


def label(model: str) -> str:
    """A generator's display name: 'StyleGAN2'/'Diffusion' for the instances named as their type."""
    return MODEL_LABELS.get(model, model)


def instance_colours(models: list[str], types: list[str]) -> dict[str, str]:
    """A colour per generator instance, shades of its type's colour in the order given."""
    seen: dict[str, int] = {}
    out = {}
    for model, kind in zip(models, types):
        shades = TYPE_SHADES.get(kind, TYPE_SHADES["external"])
        out[model] = shades[seen.get(kind, 0) % len(shades)]
        seen[kind] = seen.get(kind, 0) + 1
    return out


def save(fig, path) -> None:
    """Write a matplotlib figure to `path` as PNG (110 dpi, tight box), atomically, and close it."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def correlation_histograms(table: pd.DataFrame, holdout: pd.DataFrame, baseline: pd.DataFrame, model: str,
                           title: str, legend: str | None = None):
    """Per view: the generator's highest correlations against the held-out real images' (the study's main figure).

    table, holdout: memorization tables (view, channel_name, r_max) of the samples and of the held-out
    images; baseline: holdout_baseline.csv (view, p99), drawn as a dashed line. `model`: the generator's
    type (its colour); `legend`: its name in the legend (default: label(model)). One panel per view but
    `all`, 40 bins from the lowest r (rounded down to 0.05) to 1, densities. Returns the figure.
    """
    shown = legend or label(model)
    views = [v for v in dict.fromkeys(table["view"]) if v != "all"]
    cols = min(3, len(views))
    rows = int(np.ceil(len(views) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, view in zip(axes.flat, views):
        r = table.loc[table["view"] == view, "r_max"].to_numpy(float)
        h = holdout.loc[holdout["view"] == view, "r_max"].to_numpy(float)
        r, h = r[np.isfinite(r)], h[np.isfinite(h)]
        lo = min(np.min(r, initial=1), np.min(h, initial=1))
        bins = np.linspace(max(-1.0, np.floor(lo * 20) / 20), 1.0, 41)
        ax.hist(r, bins=bins, color=colour(model), alpha=0.75, density=True,
                label=f"{shown} samples (n={len(r)})")
        ax.hist(h, bins=bins, histtype="step", color=HOLDOUT_COLOUR, linewidth=1.8, density=True,
                label=f"held-out real images (n={len(h)})")
        p99 = baseline.loc[baseline["view"].astype(str) == view, "p99"]
        if len(p99) and np.isfinite(p99.iloc[0]):
            ax.axvline(p99.iloc[0], color="black", linestyle="--", linewidth=1, label="held-out 99th percentile")
        name = table.loc[table["view"] == view, "channel_name"].iloc[0]
        ax.set_title(name)
        ax.set_xlabel(R_LABEL)
        ax.set_ylabel("density")
    for ax in list(axes.flat)[len(views):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _neighbour(slices: pd.DataFrame, subject: str, slice_: int, step: int):
    """Training image index of the same subject's slice ± step, or None when it was not kept."""
    hit = slices[(slices["subject"] == subject) & (slices["slice"] == slice_ + step)]
    return int(hit["index"].iloc[0]) if len(hit) else None


def copy_pairs(table: pd.DataFrame, samples: np.ndarray, train: np.ndarray, train_slices: pd.DataFrame,
               view: str, k: int, title: str):
    """The k most correlated samples: matched training image, sample, pixel scatter, and the matched
    subject's previous and next slice (adjacent slices are near-duplicates in 3-D data)."""
    rows = table[table["view"] == view].dropna(subset=["r_max"]).sort_values("r_max", ascending=False).head(k)
    c = int(view) if view.isdigit() else 0
    name = rows["channel_name"].iloc[0] if len(rows) else view
    fig, axes = plt.subplots(max(len(rows), 1), 5, figsize=(13, 2.7 * max(len(rows), 1)), squeeze=False)
    headers = ["training image (best match)", "synthetic image", "pixel intensities", "previous slice",
               "next slice"]
    for j, head in enumerate(headers):
        axes[0, j].set_title(head, fontsize=9)
    for i, (_, row) in enumerate(rows.iterrows()):
        t_idx, q_idx = int(row["train_index"]), int(row["query"])
        real, fake = train[t_idx, c], samples[q_idx, c]
        axes[i, 0].imshow(real, cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_ylabel(f"sample {q_idx}\nr = {row['r_max']:.4f}", fontsize=8)
        axes[i, 1].imshow(fake, cmap="gray", vmin=0, vmax=255)
        ax = axes[i, 2]
        ax.scatter(real.ravel(), fake.ravel(), s=1, alpha=0.3, color="black", rasterized=True)
        ax.plot([0, 255], [0, 255], color=HOLDOUT_COLOUR, linewidth=0.8)
        ax.set_xlim(0, 255)
        ax.set_ylim(0, 255)
        ax.set_xlabel("training pixel (0–255)", fontsize=7)
        ax.set_ylabel("synthetic pixel (0–255)", fontsize=7)
        ax.tick_params(labelsize=6)
        subject = row["subject"]
        for j, step in ((3, -1), (4, 1)):
            n = _neighbour(train_slices, subject, int(row["slice"]), step) if pd.notna(row["slice"]) else None
            if n is None:
                axes[i, j].text(0.5, 0.5, "not a training slice", ha="center", va="center", fontsize=8)
                axes[i, j].set_facecolor("#f0f0f0")
            else:
                axes[i, j].imshow(train[n, c], cmap="gray", vmin=0, vmax=255)
                r = np.corrcoef(train[n, c].ravel().astype(float), fake.ravel().astype(float))[0, 1]
                axes[i, j].set_xlabel(f"slice {int(row['slice']) + step}, r = {r:.3f}", fontsize=7)
        axes[i, 0].set_xlabel(f"subject {subject}, slice {row['slice']}", fontsize=7)
        for j in (0, 1, 3, 4):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    if not len(rows):
        axes[0, 0].text(0.5, 0.5, "no defined correlations", ha="center")
    fig.suptitle(f"{title}: the {len(rows)} samples most correlated with a training image ({name})")
    fig.tight_layout()
    return fig


def sample_grid(samples: np.ndarray, train: np.ndarray, channel_names: list[str], title: str, n: int = 8):
    """Rows: channels; left block the first n synthetic images, right block n random training images
    (seed 0), each shown on 0-255 grey. samples: (M, C, H, W) uint8; train: (N, C, H, W) uint8;
    channel_names: row labels (position where missing). Returns the matplotlib figure."""
    n = min(n, len(samples), len(train))
    picks = np.random.default_rng(0).choice(len(train), n, replace=False)
    channels = samples.shape[1]
    fig, axes = plt.subplots(channels, 2 * n, figsize=(1.1 * 2 * n, 1.2 * channels + 0.6), squeeze=False)
    for c in range(channels):
        for j in range(n):
            axes[c, j].imshow(samples[j, c], cmap="gray", vmin=0, vmax=255)
            axes[c, n + j].imshow(train[picks[j], c], cmap="gray", vmin=0, vmax=255)
        axes[c, 0].set_ylabel(channel_names[c] if c < len(channel_names) else str(c), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("synthetic →", fontsize=8, loc="left")
    axes[0, n].set_title("training (random) →", fontsize=8, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(curve: pd.DataFrame | None, model: str, title: str, sampled_kimg: float | None = None):
    """One panel per loss column of the training log (log.csv: kimg, step, the losses, images_per_s,
    s_per_kimg, peak_gpu_mem_gb) and one of throughput (images / s), against thousands of training
    images shown; `curve` None (a generator trained elsewhere) gives a panel saying so. `sampled_kimg`:
    the kimg of the network the samples came from; where the log runs past it (a network kept along
    the way, config keep_kimg) a dashed line marks it in every panel. Returns the matplotlib figure."""
    if curve is None:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "trained elsewhere: no training curve", ha="center", va="center")
        fig.suptitle(title)
        return fig
    losses = [c for c in curve.columns if c not in ("kimg", "step", "images_per_s", "s_per_kimg", "peak_gpu_mem_gb")]
    fig, axes = plt.subplots(1, len(losses) + 1, figsize=(3.6 * (len(losses) + 1), 3), squeeze=False)
    for ax, name in zip(axes.flat, losses):
        ax.plot(curve["kimg"], curve[name], color=colour(model), marker=".")
        ax.set_title(name)
        ax.set_xlabel("training images shown (thousands)")
        ax.set_ylabel(name)
    ax = axes.flat[len(losses)]
    ax.plot(curve["kimg"], curve["images_per_s"], color=colour(model), marker=".")
    ax.set_title("throughput")
    ax.set_xlabel("training images shown (thousands)")
    ax.set_ylabel("images / s")
    if sampled_kimg is not None and len(curve) and curve["kimg"].max() > sampled_kimg + 1e-9:
        for ax in axes.flat:
            ax.axvline(sampled_kimg, color="black", linestyle="--", linewidth=1,
                       label=f"sampled network: {kimg_text(sampled_kimg)} kimg")
        axes.flat[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def cross_dataset_summary(summary: pd.DataFrame):
    """Share of likely copies (above the held-out 99th percentile) and mean highest correlation, by
    model and dataset, datasets ordered by training-set size. A dataset × model whose `verdict` is
    "cannot judge" (`medmem.memorization.verdict`) is drawn hatched in light grey and labelled so,
    not in its model's colour: its numbers are shown but not ranked. Where the summary has them, the
    95 % bootstrap intervals over training subjects (thin, capped) and over samples (thick, pale) as
    error bars (`interval_bars`), and a third panel with the Fréchet distance in the copy detector's
    feature space (`encoder_bars`; per dataset, not FID)."""
    order = summary.groupby("dataset")["n_train"].first().sort_values()
    datasets = list(order.index)
    present = list(dict.fromkeys(summary["model"]))
    types = summary.groupby("model", sort=False)["type"].first() if "type" in summary else pd.Series(dtype=str)
    kind = {m: (types.get(m) if isinstance(types.get(m), str) and types.get(m) else m) for m in present}
    type_order = list(MODEL_COLOURS)
    models = sorted(present, key=lambda m: (type_order.index(kind[m]) if kind[m] in type_order else len(type_order),
                                            present.index(m)))
    labels = summary.groupby("model", sort=False)["label"].first() if "label" in summary else pd.Series(dtype=str)
    shown = {m: labels.get(m) if isinstance(labels.get(m), str) and labels.get(m) else label(m) for m in models}
    colours = instance_colours(models, [kind[m] for m in models])
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(datasets))
    encoder = has_encoder_quality(summary)  # a third panel: FD in the copy detector's feature space
    fig, axes = plt.subplots(1, 3 if encoder else 2, figsize=(16.5 if encoder else 11, 3.8))
    for m, model in enumerate(models):
        part = summary[summary["model"] == model].set_index("dataset").reindex(datasets)
        verdicts = part["verdict"] if "verdict" in part else pd.Series("", index=part.index)
        unjudged = (verdicts == CANNOT_JUDGE).to_numpy()
        bars = axes[0].bar(x + (m - (len(models) - 1) / 2) * width, part["share_above_holdout_p99"] * 100, width,
                           color=colours[model], label=shown[model])
        shares = (part["share_above_holdout_p99"] * 100).to_numpy(float)
        axes[0].bar_label(bars, labels=["" if u or not np.isfinite(v) else f"{v:.1f}%" for u, v in zip(unjudged, shares)],
                          fontsize=7, padding=2)
        for where, u, v in zip(x + (m - (len(models) - 1) / 2) * width, unjudged, shares):
            if u:
                axes[0].annotate("cannot\njudge", (where, np.nan_to_num(v)),
                                 xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7)
        means = axes[1].bar(x + (m - (len(models) - 1) / 2) * width, part["corr_mean"], width, color=colours[model],
                            label=shown[model])
        where = x + (m - (len(models) - 1) / 2) * width
        interval_bars(axes[0], where, part, "share_above_holdout_p99", 100)
        interval_bars(axes[1], where, part, "corr_mean")
        if encoder:
            encoder_bars(axes[2], where, part, width, colours[model], unjudged)
        for bar, u in zip([*bars, *means], [*unjudged, *unjudged]):
            if u:
                bar.set(facecolor=UNJUDGED_COLOUR, edgecolor=colours[model], hatch="///")
    handles = [Patch(color=colours[model], label=shown[model]) for model in models]
    if (summary.get("verdict", pd.Series(dtype=str)) == CANNOT_JUDGE).any():
        handles.append(Patch(facecolor=UNJUDGED_COLOUR, hatch="///", edgecolor="#555555",
                             label="cannot judge: samples do\nnot yet look like real images"))
    hold = summary.groupby("dataset")["holdout_mean"].first().reindex(datasets)
    held = axes[1].scatter(x, hold, color=HOLDOUT_COLOUR, marker="D", zorder=3, label="held-out real images")
    ticks = [f"{d}\n{int(order[d])} training images" for d in datasets]
    for ax in axes:
        ax.set_xticks(x, ticks, fontsize=8)
    handles += interval_handles(summary)
    if encoder:
        encoder_axis(axes[2], summary)
    top = np.nan_to_num(summary.filter(regex="^share_above_holdout_p99(_hi_.*)?$").to_numpy(float) * 100).max(initial=0)
    axes[0].set_ylim(0, max(5.0, top * 1.25))  # 0 % likely copies is a result: keep the axis visible
    axes[0].set_ylabel("samples above held-out 99th pct. (%)")
    axes[0].set_title("likely copies")
    axes[1].set_ylabel("mean highest Pearson r")
    axes[1].set_title("mean highest correlation")
    lows = np.nan_to_num(np.concatenate([summary.filter(regex="^corr_mean(_lo_.*)?$").to_numpy(float).ravel(),
                                         hold.to_numpy(float)]), nan=1.0)
    axes[1].set_ylim(max(0.0, float(lows.min()) - 0.05), 1.0)
    axes[-1].legend(handles=[*handles, held], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[0].legend(handles=handles, fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


INTERVAL_STYLES = {"subjects": {"color": "black", "elinewidth": 1.0, "capsize": 3},
                   "samples": {"color": "#555555", "elinewidth": 4.0, "capsize": 0, "alpha": 0.45}}
ENCODER_TITLE = "FD / KID in the copy detector's feature space\n(per dataset; not FID, not comparable across datasets)"


def interval_bars(ax, where: np.ndarray, part: pd.DataFrame, stat: str, scale: float = 1.0) -> None:
    """Error bars at x positions `where` from the columns `<stat>_lo_<source>`, `<stat>_hi_<source>` of
    `part` (one row per position), for source "samples" and "subjects" (`INTERVAL_STYLES`), × `scale`
    (100: shares in %); nothing where a column is absent or a bound undefined."""
    value = part[stat].to_numpy(float) * scale
    for source, style in INTERVAL_STYLES.items():
        lo_col, hi_col = f"{stat}_lo_{source}", f"{stat}_hi_{source}"
        if lo_col not in part or hi_col not in part:
            continue
        lo, hi = part[lo_col].to_numpy(float) * scale, part[hi_col].to_numpy(float) * scale
        ok = np.isfinite(value) & np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            err = np.vstack([np.clip(value - lo, 0, None), np.clip(hi - value, 0, None)])[:, ok]
            ax.errorbar(where[ok], value[ok], yerr=err, fmt="none", zorder=4, gid=f"interval_{source}", **style)


def interval_handles(summary: pd.DataFrame) -> list:
    """Legend entries for the intervals drawn by `interval_bars` (none when the summary has none)."""
    from matplotlib.lines import Line2D

    out = []
    for source, style in INTERVAL_STYLES.items():
        if summary.filter(regex=f"_(lo|hi)_{source}$").notna().any().any():
            out.append(Line2D([], [], color=style["color"], lw=style["elinewidth"], alpha=style.get("alpha", 1.0),
                              label=f"95 % interval over {'training subjects' if source == 'subjects' else 'samples'}"))
    return out


def has_encoder_quality(summary: pd.DataFrame) -> bool:
    """Whether the summary has a Fréchet distance in the copy detector's feature space (`fd_encoder`)."""
    return "fd_encoder" in summary and summary["fd_encoder"].notna().any()


def encoder_bars(ax, where: np.ndarray, part: pd.DataFrame, width: float, colour: str, unjudged: np.ndarray) -> None:
    """Bars of `fd_encoder` at `where`, labelled with `kid_encoder` ("KID 0.012"); a "cannot judge" one
    hatched in light grey like the other panels."""
    fd = part["fd_encoder"].to_numpy(float)
    kid = part["kid_encoder"].to_numpy(float) if "kid_encoder" in part else np.full(len(fd), np.nan)
    bars = ax.bar(where, np.nan_to_num(fd), width, color=colour)
    ax.bar_label(bars, labels=[f"KID {k:.3g}" if np.isfinite(k) else "" for k in kid], fontsize=6, padding=2)
    for bar, u in zip(bars, unjudged):
        if u:
            bar.set(facecolor=UNJUDGED_COLOUR, edgecolor=colour, hatch="///")


def encoder_axis(ax, summary: pd.DataFrame) -> None:
    """Title and label of the copy detector's feature-space panel (`ENCODER_TITLE`)."""
    ax.set_title(ENCODER_TITLE, fontsize=9)
    ax.set_ylabel("Fréchet distance (encoder features)")
    top = np.nan_to_num(summary["fd_encoder"].to_numpy(float)).max(initial=0)
    ax.set_ylim(0, max(top * 1.2, 1e-6))
