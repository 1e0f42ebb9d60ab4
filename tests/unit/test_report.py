"""medmem report: the summary row against hand-computed values, the figures, the table files."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_medmem
from PIL import Image

from medmem.data.writer import DatasetWriter
from medmem.memorization.table import write_table

R_SAMPLES = [0.50, 0.91, 0.93, 0.96, 0.995, 1.0]
R_HOLDOUT = [0.80, 0.85, 0.90, 0.92]


def _table(r, train_index, names=("t1", "seg")):
    frames = []
    for c, name in enumerate(names):
        frames.append(pd.DataFrame({
            "query": np.arange(len(r)), "view": str(c), "channel_name": name,
            "r_max": np.array(r, float) - 0.01 * c, "train_index": train_index,
            "subject": [f"s{i // 4}" for i in train_index], "slice": pd.array([i % 4 for i in train_index], "Int64"),
            "topk_r": [[x] for x in r], "topk_index": [[i] for i in train_index]}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (8, 2, 16, 16), dtype=np.uint8)
    writer = DatasetWriter(root / "data" / "toy", ["t1", "seg"], 16, "brats", [])
    writer.add("train", train, [{"subject": f"s{i // 4}", "slice": i % 4} for i in range(8)])
    writer.add("holdout", train[:4], [{"subject": "h0", "slice": i} for i in range(4)])
    writer.commit()
    mem = root / "memorization" / "toy"
    write_table(_table(R_SAMPLES, [1, 2, 3, 5, 6, 0]), mem / "diffusion.parquet", {})
    write_table(_table(R_HOLDOUT, [0, 1, 2, 3]), mem / "holdout.parquet", {})
    pd.DataFrame({"view": ["0", "1"], "channel_name": ["t1", "seg"], "n_holdout": 4, "n_undefined": 0,
                  "mean": [0.8675, 0.8575], "median": [0.875, 0.865], "p99": [0.9194, 0.9094],
                  "max": [0.92, 0.91]}).to_csv(mem / "holdout_baseline.csv", index=False)
    rows = [{"view": c, "channel_name": n, "perturbation": p, "threshold": t, "threshold_value": 0.9,
             "n_planted": 4, "n_defined": 4, "detected": d, "source_matched": d, "false_alarm_holdout": 0.0}
            for c, n in (("0", "t1"), ("1", "seg")) for p, d in (("exact", 1.0), ("noise", 0.75))
            for t in ("0.90", "holdout_p99")]
    pd.DataFrame(rows).to_csv(mem / "calibration.csv", index=False)
    (root / "quality" / "toy").mkdir(parents=True)
    (root / "quality" / "toy" / "diffusion.json").write_text(json.dumps(
        {"computed": False, "note": "not computed: Inception weights unavailable (offline)", "channels": {},
         "mean": {}, "n_samples": 6}))
    (root / "samples" / "toy").mkdir(parents=True)
    np.save(root / "samples" / "toy" / "diffusion.npy", rng.integers(0, 256, (6, 2, 16, 16), dtype=np.uint8))
    (root / "samples" / "toy" / "diffusion.json").write_text(json.dumps({"sampler": "dpm-solver++"}))
    curve = root / "train" / "toy" / "diffusion"
    curve.mkdir(parents=True)
    pd.DataFrame({"kimg": [0.1, 0.2], "step": [1, 2], "loss": [0.5, 0.3], "images_per_s": [10, 11],
                  "s_per_kimg": [100, 90], "peak_gpu_mem_gb": [0, 0]}).to_csv(curve / "log.csv", index=False)
    return root


def figures_args(results, out, dataset="toy", model="diffusion", curve=True):
    """`medmem report figures` with every file named, as the rule passes them."""
    mem, files = results / "memorization" / dataset, []
    inputs = {"table": mem / f"{model}.parquet", "holdout": mem / "holdout.parquet",
              "baseline": mem / "holdout_baseline.csv", "calibration": mem / "calibration.csv",
              "quality": results / "quality" / dataset / f"{model}.json",
              "samples": results / "samples" / dataset / f"{model}.npy",
              "train": results / "data" / dataset / "train.npy", "slices": results / "data" / dataset / "slices.csv",
              "info": results / "data" / dataset / "dataset.json"}
    if curve:
        inputs["curve"] = results / "train" / dataset / model / "log.csv"
    outputs = {"histogram-figure": "histogram.png", "pairs-figure": "pairs.png", "samples-figure": "samples.png",
               "training-figure": "training.png", "view-pairs-figure": "view_pairs.png", "flags": "flags.csv",
               "row": "row.json"}
    for name, path in inputs.items():
        files += [f"--{name}", path]
    for name, path in outputs.items():
        files += [f"--{name}", out / path]
    return ["report", "figures", "--dataset", dataset, "--model", model, *files]


def test_figures_and_summary_row_by_hand(results, tmp_path):
    out = tmp_path / "report"
    code, _, err = run_medmem(*figures_args(results, out / "toy" / "diffusion"))
    assert code == 0, err
    for name in ("histogram", "pairs", "samples", "training"):
        with Image.open(out / "toy" / "diffusion" / f"{name}.png") as im:
            assert im.width > 300 and im.height > 150
            assert np.asarray(im.convert("L")).std() > 5  # not blank
    row = json.loads((out / "toy" / "diffusion" / "row.json").read_text())
    r = np.array(R_SAMPLES)
    assert row["channel"] == "t1" and row["n_samples"] == 6 and row["n_train"] == 8
    assert row["corr_mean"] == pytest.approx(r.mean()) and row["corr_median"] == pytest.approx(0.945)
    assert row["share_above_0.90"] == pytest.approx(5 / 6) and row["share_above_0.95"] == pytest.approx(3 / 6)
    assert row["share_above_0.99"] == pytest.approx(2 / 6)
    assert row["holdout_p99"] == pytest.approx(0.9194) and row["share_above_holdout_p99"] == pytest.approx(4 / 6)
    assert row["planted_exact_detected"] == 1.0 and row["planted_detected_min"] == 0.75
    assert row["fid"] is None or np.isnan(row["fid"])
    assert row["fid_note"].startswith("not computed: Inception weights unavailable")
    assert row["sampler"] == "dpm-solver++"
    # the verdict: median 0.945 >= held-out 5th percentile 0.80 + 0.15 × 0.05 = 0.8075 (R_HOLDOUT, interpolated)
    assert row["verdict"] == "judged" and row["holdout_p05"] == pytest.approx(0.8075)
    assert row["verdict_text"].startswith("4 of 6 samples (66.7%) reach the held-out 99th percentile 0.919")

    code, _, err = run_medmem("report", "summary", out / "summary.csv", out / "summary.md", out / "summary.png",
                              out / "toy" / "diffusion" / "row.json")
    assert code == 0, err
    summary = pd.read_csv(out / "summary.csv")
    needed = ["dataset", "model", "n_samples", "corr_mean", "corr_median", "share_above_0.95", "holdout_p99",
              "planted_exact_detected", "fid", "fid_note", "channel"]
    assert set(needed) <= set(summary.columns) and len(summary) == 1
    assert summary.loc[0, "dataset"] == "toy" and np.isnan(summary.loc[0, "fid"])
    md = (out / "summary.md").read_text()
    assert "| toy | diffusion | 8 | 6 | t1 | 0.882 | 0.945 | 83.3% | 50.0% | 33.3% | 0.919 | 66.7% |" in md
    assert "FID: not computed" in md
    assert summary.loc[0, "verdict"] == "judged" and summary.loc[0, "holdout_p05"] == pytest.approx(0.8075)
    assert md.splitlines()[2].endswith("| 0.807 | judged |")  # 0.8075 in binary is just below
    assert "- toy × diffusion: 4 of 6 samples (66.7%) reach the held-out 99th percentile 0.919" in md
    assert "not comparable in value with the study's Keras script" in md  # the IS is torch-fidelity's
    assert "skip constant training images" in md and "np.argmax" in md
    assert (out / "summary.png").stat().st_size > 10_000


def test_missing_input_is_one_line_naming_the_file(results, tmp_path):
    (results / "quality" / "toy" / "diffusion.json").unlink()
    code, _, err = run_medmem(*figures_args(results, tmp_path / "out"))
    assert code == 2 and "diffusion.json: file does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "row.json").exists()



@pytest.mark.parametrize("name", ["diffusion.parquet", "holdout_baseline.csv", "calibration.csv"])
def test_tables_of_an_older_medmem_are_refused_by_name(results, tmp_path, name):
    """Before views were called views, the tables held them in a column `channel`: one line, rerun."""
    path = results / "memorization" / "toy" / name
    if path.suffix == ".parquet":
        table = pd.read_parquet(path).rename(columns={"view": "channel"})
        table.to_parquet(path, index=False)
    else:
        pd.read_csv(path).rename(columns={"view": "channel"}).to_csv(path, index=False)
    code, _, err = run_medmem(*figures_args(results, tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"{name}: written by an older medmem (views in column 'channel', now 'view')" in err
    assert not (tmp_path / "out" / "row.json").exists()


def test_config_thresholds_reach_row_and_table(results, tmp_path):
    """memorization.thresholds (here 0.5 and 0.97) are the row's and the summary's share columns."""
    out = tmp_path / "out"
    code, _, err = run_medmem(*figures_args(results, out), "--thresholds", "0.5", "0.97")
    assert code == 0, err
    row = json.loads((out / "row.json").read_text())
    assert row["share_above_0.50"] == pytest.approx(6 / 6) and row["share_above_0.97"] == pytest.approx(2 / 6)
    assert "share_above_0.90" not in row
    assert run_medmem("report", "summary", out / "s.csv", out / "s.md", out / "s.png", out / "row.json")[0] == 0
    columns = list(pd.read_csv(out / "s.csv").columns)
    assert columns[columns.index("corr_median") + 1:][:2] == ["share_above_0.50", "share_above_0.97"]
    assert "share_above_0.97" in (out / "s.md").read_text().splitlines()[0]


def test_a_generator_trained_elsewhere_has_no_curve(results, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_medmem(*figures_args(results, out, curve=False), "--type", "external", "--label", "Vendor X")
    assert code == 0, err
    row = json.loads((out / "row.json").read_text())
    assert row["type"] == "external" and row["label"] == "Vendor X" and row["model"] == "diffusion"
    assert (out / "training.png").stat().st_size > 1000


def test_noise_samples_are_not_ranked(tmp_path):
    """A generator whose samples sit far below the held-out images (noise) gets "cannot judge" in the
    row, the CSV, the Markdown (cell and sentence) and the summary figure; one that has learned does not."""
    from medmem.report import figures
    from medmem.report.summary import summary_row, write_summary

    holdout = _table(R_HOLDOUT, [0, 1, 2, 3])
    baseline = pd.DataFrame({"view": ["0", "1"], "channel_name": ["t1", "seg"], "p99": [0.9194, 0.9094],
                             "mean": [0.8675, 0.8575]})
    calibration = pd.DataFrame({"view": ["0"], "threshold": ["holdout_p99"], "perturbation": ["exact"],
                                "detected": [1.0]})
    noise = [0.10, 0.30, 0.55, 0.60, 0.95]  # median 0.55 < 0.8075; one sample above the p99 0.9194
    rows = [summary_row("toy", "diffusion", _table(noise, [0, 1, 2, 3, 4]), baseline, calibration, {}, 8,
                        holdout=holdout),
            summary_row("toy", "stylegan2", _table(R_SAMPLES, [1, 2, 3, 5, 6, 0]), baseline, calibration, {}, 8,
                        holdout=holdout),
            summary_row("toy", "unheld", _table(R_SAMPLES, [1, 2, 3, 5, 6, 0]), baseline, calibration, {}, 8)]
    assert [r["verdict"] for r in rows] == ["cannot judge", "judged", "no baseline"]
    assert rows[0]["verdict_text"].startswith("cannot judge: samples do not yet look like real images (median r "
                                              "0.550 against held-out 5th percentile 0.807)")
    assert "still, 1 of 5 samples (20.0%) reach the held-out 99th percentile 0.919" in rows[0]["verdict_text"]
    table = write_summary(rows, tmp_path / "summary.csv", tmp_path / "summary.md")
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert list(csv["verdict"]) == ["cannot judge", "judged", "no baseline"]  # sorted by dataset, model
    md = (tmp_path / "summary.md").read_text()
    assert "| cannot judge |" in md and "- toy × diffusion: cannot judge: samples do not yet look like real" in md
    fig = figures.cross_dataset_summary(table)
    likely, means = fig.axes[0], fig.axes[1]
    texts = [t.get_text() for t in likely.texts]
    assert texts.count("cannot\njudge") == 1 and "20.0%" not in texts and "66.7%" in texts  # noise: no share shown
    grey = [b for b in means.patches if b.get_hatch() == "///" and b.get_height() == pytest.approx(np.mean(noise))]
    assert len(grey) == 1
    labels = [t.get_text() for t in means.get_legend().get_texts()]
    assert any(label.startswith("cannot judge") for label in labels)


def test_intervals_and_encoder_quality_by_hand(tmp_path):
    """The row's bootstrap intervals of R_SAMPLES over training subjects, by hand: subject s0 holds the best
    matches of r = 0.50, 0.91, 0.93, 1.0 (mean 0.835, 2 of 4 at or above p99 0.9194), s1 of 0.96, 0.995 (mean
    0.9775, 2 of 2). Resampling 2 subjects gives {s0, s0} (p 1/4), {s0, s1} (1/2) or {s1, s1} (1/4), so the
    2.5th and 97.5th percentiles are the two single-subject values. The encoder's FD / KID reach their own
    columns and section, never the Inception ones; the figure draws the intervals and the encoder panel."""
    from matplotlib.container import ErrorbarContainer

    from medmem.report import figures
    from medmem.report.summary import ENCODER_LABEL, INTERVAL_COLUMNS, summary_row, write_summary

    baseline = pd.DataFrame({"view": ["0", "1"], "channel_name": ["t1", "seg"], "p99": [0.9194, 0.9094],
                             "mean": [0.8675, 0.8575]})
    calibration = pd.DataFrame({"view": ["0"], "threshold": ["holdout_p99"], "perturbation": ["exact"],
                                "detected": [1.0]})
    quality = {"computed": False, "note": "not computed: Inception weights unavailable",
               "encoder": {"computed": True, "fd": 1.5, "kid_mean": 0.01, "kid_std": 0.001}}
    table = _table(R_SAMPLES, [1, 2, 3, 5, 6, 0])
    row = summary_row("toy", "diffusion", table, baseline, calibration, quality, 8,
                      holdout=_table(R_HOLDOUT, [0, 1, 2, 3]))
    assert row["corr_mean_lo_subjects"] == pytest.approx(0.835) and row["corr_mean_hi_subjects"] == pytest.approx(0.9775)
    assert row["share_above_holdout_p99_lo_subjects"] == pytest.approx(0.5)
    assert row["share_above_holdout_p99_hi_subjects"] == pytest.approx(1.0)
    r = np.array(R_SAMPLES)
    assert r.min() < row["corr_mean_lo_samples"] < r.mean() < row["corr_mean_hi_samples"] < r.max()
    assert row["fd_encoder"] == 1.5 and row["kid_encoder"] == 0.01 and np.isnan(row["fid"]) and np.isnan(row["kid"])
    off = summary_row("toy", "stylegan2", table, baseline, calibration,
                      {"computed": False, "note": "", "encoder": {"computed": False, "note": "not computed: ..."}}, 8)
    assert np.isnan(off["fd_encoder"]) and np.isnan(off["kid_encoder"])

    row.update(dp_epsilon=7.995, dp_delta=5.05e-5)  # as report figures adds a DP-SGD network's record
    summary = write_summary([row, off], tmp_path / "summary.csv", tmp_path / "summary.md")
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert list(csv.columns[-len(INTERVAL_COLUMNS) - 4:]) == ["fd_encoder", "kid_encoder", *INTERVAL_COLUMNS,
                                                              "dp_epsilon", "dp_delta"]
    assert csv["dp_epsilon"].iloc[0] == 7.995 and np.isnan(csv["dp_epsilon"].iloc[1])
    md = (tmp_path / "summary.md").read_text()
    header = md.splitlines()[0]
    assert "fd_encoder" not in header and "_lo_" not in header and header.endswith("| verdict |")
    assert "- toy × diffusion: ε = 8, δ = 5.05e-05" in md and "toy × stylegan2: ε" not in md
    assert "| toy | diffusion | 0.882 [" in md and "| 0.882 [0.835, 0.97" in md  # 0.9775: rounds either way
    assert "| 66.7% [50.0, 100.0] |" in md
    assert f"{ENCODER_LABEL}:" in md and "| toy | diffusion | 1.50 | 0.0100 |" in md and "| toy | stylegan2 | – | – |" in md

    fig = figures.cross_dataset_summary(summary)
    assert len(fig.axes) == 3 and "copy detector's feature space" in fig.axes[2].get_title()
    assert "not FID" in fig.axes[2].get_title()
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 4  # per generator: over samples and over subjects
    segments = [s for c in bars for s in c.lines[2][0].get_segments()]
    assert any(np.allclose(s[:, 1], [50.0, 100.0]) for s in segments)  # diffusion's subject interval, in %
    no_encoder = summary.assign(fd_encoder=np.nan, kid_encoder=np.nan)
    assert len(figures.cross_dataset_summary(no_encoder).axes) == 2


def test_a_dp_sgd_networks_guarantee_reaches_the_row(results, tmp_path):
    """The samples' record "privacy" (written by medmem sample from a DP-SGD network) gives the row the
    accountant's ε and δ; a generator without DP-SGD has NaN there."""
    code, _, err = run_medmem(*figures_args(results, tmp_path / "plain"))
    assert code == 0, err
    plain = json.loads((tmp_path / "plain" / "row.json").read_text())
    assert plain["dp_epsilon"] is None or np.isnan(plain["dp_epsilon"])
    record = results / "samples" / "toy" / "diffusion.json"
    sampling = json.loads(record.read_text())
    record.write_text(json.dumps({**sampling, "privacy": {"epsilon": 7.995, "delta": 5.05e-5, "target_epsilon": 8}}))
    code, _, err = run_medmem(*figures_args(results, tmp_path / "dp"))
    assert code == 0, err
    row = json.loads((tmp_path / "dp" / "row.json").read_text())
    assert (row["dp_epsilon"], row["dp_delta"]) == (7.995, 5.05e-5)


def test_a_collapsed_generator_is_called_concentrated(tmp_path):
    """Five of six samples nearest to training image 2 (share 0.83) against held-out images one each on
    four (largest share 0.25): concentrated, in the columns, the verdict sentence and the Markdown; the
    same r spread over six images is not."""
    from medmem.report.summary import CONCENTRATION_COLUMNS, summary_row, write_summary

    baseline = pd.DataFrame({"view": ["0", "1"], "channel_name": ["t1", "seg"], "p99": [0.9194, 0.9094],
                             "mean": [0.8675, 0.8575]})
    calibration = pd.DataFrame({"view": ["0"], "threshold": ["holdout_p99"], "perturbation": ["exact"],
                                "detected": [1.0]})
    holdout = _table(R_HOLDOUT, [0, 1, 2, 3])
    collapsed = summary_row("toy", "stylegan2", _table(R_SAMPLES, [2, 2, 2, 5, 2, 2]), baseline, calibration, {}, 8,
                            holdout=holdout)
    spread = summary_row("toy", "diffusion", _table(R_SAMPLES, [1, 2, 3, 5, 6, 0]), baseline, calibration, {}, 8,
                         holdout=holdout)
    assert collapsed["concentrated"] and not spread["concentrated"]
    assert collapsed["top_match_share"] == pytest.approx(5 / 6) and collapsed["matched_train_images"] == 2
    assert collapsed["holdout_top_match_share"] == pytest.approx(0.25) and spread["top_match_share"] == pytest.approx(1 / 6)
    assert collapsed["verdict"] == "judged"  # the verdict stands; the sentence says what it rests on
    assert "; concentrated: 83% of the samples have one and the same nearest training image (index 2; held-out " \
           "images: at most 25%), and only 2 of 8 training images" in collapsed["verdict_text"]
    assert "concentrated" not in spread["verdict_text"]
    write_summary([collapsed, spread], tmp_path / "summary.csv", tmp_path / "summary.md")
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert set(CONCENTRATION_COLUMNS) <= set(csv.columns) and list(csv["concentrated"]) == [False, True]
    assert "- toy × stylegan2: " in (tmp_path / "summary.md").read_text() and "mode collapse" in \
        (tmp_path / "summary.md").read_text()


def test_a_kept_networks_curve_marks_where_it_was_sampled():
    """The source's log runs to 24 kimg; the samples came from its 4-kimg network: a dashed line at 4 in
    every panel (loss and throughput), labelled; a network sampled at the log's end gets none."""
    from medmem.report import figures

    curve = pd.DataFrame({"kimg": [1.0, 2.0, 4.0, 8.0, 24.0], "step": [1, 2, 4, 8, 24],
                          "loss": [0.5, 0.3, 0.1, 0.05, 0.02], "images_per_s": [40.0] * 5})
    fig = figures.training_curves(curve, "diffusion", "t", sampled_kimg=4.0)
    for ax in fig.axes:
        marks = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [4.0, 4.0]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["sampled network: 4 kimg"]
    for kimg in (24.0, None):
        fig = figures.training_curves(curve, "diffusion", "t", sampled_kimg=kimg)
        assert not any(line.get_linestyle() == "--" for ax in fig.axes for line in ax.lines)
