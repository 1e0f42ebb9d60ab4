"""The added views in the report (issue 16): share of samples flagged per view and combined, and the
pair figure of each view's top samples with the matched translation and mirroring."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medmem.memorization.calibration import COMBINED, combined_scores, combined_threshold, wide
from medmem.memorization.shifts import translate
from medmem.report.figures import plt


def flagged_shares(table: pd.DataFrame, holdout: pd.DataFrame, baseline: pd.DataFrame,
                   combine=None) -> pd.DataFrame:
    """Per view: the share of samples at or above the view's held-out 99th percentile; then the combined
    verdict (flagged by any of the `combine` views present, at the calibrated maximum of standardised
    scores). Columns: view, view_name, threshold, n_samples, n_flagged, share_flagged."""
    rows = []
    for view in dict.fromkeys(table["view"].astype(str)):
        r = table.loc[table["view"].astype(str) == view, "r_max"].to_numpy(float)
        p99 = baseline.loc[baseline["view"].astype(str) == view, "p99"]
        threshold = float(p99.iloc[0]) if len(p99) else np.nan
        hit = np.isfinite(r) & (r >= threshold)
        rows.append({"view": view, "view_name": table.loc[table["view"].astype(str) == view,
                                                            "channel_name"].iloc[0],
                     "threshold": threshold, "n_samples": len(r), "n_flagged": int(hit.sum()),
                     "share_flagged": float(hit.mean()) if len(r) else np.nan})
    h, t = wide(holdout), wide(table)
    chosen = [v for v in h.columns if v in t.columns and (combine is None or v in set(map(str, combine)))]
    if len(chosen) > 1:
        threshold = combined_threshold(h[chosen])
        score = combined_scores(h[chosen], t[chosen])[0].to_numpy()
        hit = score >= threshold
        rows.append({"view": COMBINED, "view_name": f"{COMBINED} ({', '.join(chosen)})", "threshold": threshold,
                     "n_samples": len(score), "n_flagged": int(hit.sum()), "share_flagged": float(hit.mean())})
    return pd.DataFrame(rows)


def matched_query(image: np.ndarray, dy, dx, flipped) -> np.ndarray:
    """The query as it was matched: mirrored (if so), then translated by (dy, dx) with zero fill."""
    if pd.notna(flipped) and bool(flipped):
        image = image[..., ::-1]
    if pd.notna(dy):
        image = translate(image, int(dy), int(dx))
    return image


def view_pairs(table: pd.DataFrame, samples: np.ndarray, train: np.ndarray, views: list[str], k: int,
               title: str):
    """For each view, its k samples with the highest r_max: the matched training image, the sample, the
    sample as matched (translation and mirroring applied, for `shift` and `flip`) and |difference|.
    Shown in channel 0 (T1 for BraTS, the radiograph for chest x-rays)."""
    picks = []
    for view in views:
        rows = table[(table["view"].astype(str) == view)].dropna(subset=["r_max"])
        picks += [(view, row) for _, row in rows.sort_values("r_max", ascending=False).head(k).iterrows()]
    n = max(len(picks), 1)
    fig, axes = plt.subplots(n, 4, figsize=(9, 2.4 * n), squeeze=False)
    for j, head in enumerate(["training image (best match)", "synthetic image", "synthetic, as matched",
                              "|difference|"]):
        axes[0, j].set_title(head, fontsize=9)
    for i, (view, row) in enumerate(picks):
        real = train[int(row["train_index"]), 0]
        fake = samples[int(row["query"])]
        dy, dx, fl = (row.get("shift_y", pd.NA), row.get("shift_x", pd.NA), row.get("flipped", pd.NA))
        matched = matched_query(fake, dy, dx, fl)[0]
        axes[i, 0].imshow(real, cmap="gray", vmin=0, vmax=255)
        axes[i, 1].imshow(fake[0], cmap="gray", vmin=0, vmax=255)
        axes[i, 2].imshow(matched, cmap="gray", vmin=0, vmax=255)
        axes[i, 3].imshow(np.abs(real.astype(int) - matched.astype(int)), cmap="magma", vmin=0, vmax=255)
        how = ""
        if pd.notna(dy):
            how = f"\nshift (dy, dx) = ({int(dy)}, {int(dx)})" + (", mirrored" if pd.notna(fl) and fl else "")
        axes[i, 0].set_ylabel(f"{row['channel_name']}: sample {int(row['query'])}\n"
                              f"{'cosine' if view == 'detector' else 'r'} = {row['r_max']:.4f}{how}", fontsize=7)
        axes[i, 0].set_xlabel(f"subject {row['subject']}, slice {row['slice']}", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if not picks:
        axes[0, 0].text(0.5, 0.5, "no defined matches", ha="center")
    fig.tight_layout()
    fig.suptitle(f"{title}: the top samples of each view", y=1.0 + 0.12 / n)
    return fig
