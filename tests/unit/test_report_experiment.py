"""`medmem report experiment` on hand-made summary rows: the table, the figure, and the finding
sentence whose numbers are checked against the rows."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_medmem
from PIL import Image

from medmem.config import slug
from medmem.report.experiment import experiment_table, finding, parse_x


def row(model, share, r, verdict="judged", dataset="brats20", **more):
    return {"dataset": dataset, "model": model, "label": model, "type": "diffusion", "n_samples": 200,
            "share_above_holdout_p99": share, "corr_mean": r, "holdout_p99": 0.95, "holdout_mean": 0.93,
            "sampler": "dpm-solver++ 20", "verdict": verdict, "fid": float("nan"), "kid": float("nan"), **more}


def training_length_rows():
    # given out of x order: the table sorts them
    return ([row("k12", 0.0, 0.81), row("k2", 0.0, 0.55, verdict="cannot judge"), row("k40", 0.12, 0.90),
             row("k24", 0.01, 0.86)], [12, 2, 40, 24])


def test_the_finding_states_the_trend_with_the_rows_numbers():
    rows, xs = training_length_rows()
    table = experiment_table(rows, xs)
    assert list(table["x"]) == [2, 12, 24, 40] and list(table["model"]) == ["k2", "k12", "k24", "k40"]
    assert "fid" not in table and "fd_encoder" not in table  # none computed: no quality column
    sentence = finding(table, "kimg")
    assert sentence == ("Share above the held-out p99 rises from 0 % at kimg 2 to 12 % at kimg 40; "
                        "mean r rises from 0.55 at kimg 2 to 0.90 at kimg 40; "
                        "cannot judge k2 (kimg 2): samples not yet like real images.")


def test_no_trend_is_said_so_and_categories_give_their_extremes():
    rows = [row("a", 0.05, 0.80), row("b", 0.01, 0.90), row("c", 0.04, 0.78)]
    sentence = finding(experiment_table(rows, [1, 2, 3]), "ε")
    # share: 5 %, 1 %, 4 % (Spearman ρ -0.5); r: 0.80, 0.90, 0.78 (ρ -0.5)
    assert sentence.startswith("Share above the held-out p99 shows no clear trend with ε (5.0 % at ε 1, 4.0 % at ε 3, "
                               "between 1.0 % and 5.0 %); mean r shows no clear trend with ε (0.80 at ε 1, "
                               "0.78 at ε 3, between 0.78 and 0.90)")
    sentence = finding(experiment_table(rows, parse_x(["ancestral", "ddim 50", "dpm-solver++ 20"])), "sampler")
    assert sentence == ("Share above the held-out p99 ranges from 1.0 % (sampler ddim 50) to 5.0 % (sampler "
                        "ancestral); mean r ranges from 0.78 (sampler dpm-solver++ 20) to 0.90 (sampler ddim 50).")


def test_encoder_distances_are_preferred_and_never_mixed_with_inception():
    rows = [row("a", 0.0, 0.8, fid=50.0, kid=0.1, fd_encoder=3.0, kid_encoder=0.01),
            row("b", 0.1, 0.9, fid=40.0, kid=0.05, fd_encoder=2.0, kid_encoder=0.005)]
    table = experiment_table(rows, [1, 2])
    assert "fd_encoder" in table and "kid_encoder" in table and "fid" not in table and "kid" not in table
    assert "; FD (encoder) falls from 3 at width 1 to 2 at width 2." in finding(table, "width")
    table = experiment_table([row("a", 0.0, 0.8, fid=50.0), row("b", 0.1, 0.9, fid=40.0)], [1, 2])
    assert "fid" in table and "; FID falls from 50 at width 1 to 40 at width 2." in finding(table, "width")


def test_two_datasets_one_clause_each_and_bad_input():
    rows = [row("a", 0.0, 0.8), row("a", 0.1, 0.7, dataset="cxr"), row("b", 0.0, 0.8), row("b", 0.2, 0.6,
                                                                                            dataset="cxr")]
    sentence = finding(experiment_table(rows, [1, 1, 2, 2]), "subjects")
    assert sentence.startswith("brats20: share above the held-out p99 stays at 0 % from subjects 1 to subjects 2")
    assert ". cxr: share above the held-out p99 rises from 10 % at subjects 1 to 20 % at subjects 2; mean r falls " \
           "from 0.70 at subjects 1 to 0.60 at subjects 2." in sentence
    with pytest.raises(Exception, match="2 rows but 1 x values"):
        experiment_table(rows[:2], [1])
    assert slug("Training length (kimg)") == "training-length-kimg"
    assert finding(experiment_table([row("a", 0.02, 0.85)], ["ddim 3"]), "sampler") == (
        "Share above the held-out p99 is 2.0 % at sampler ddim 3; mean r is 0.85 at sampler ddim 3.")


def test_a_dataset_size_experiment_is_one_series_across_its_cuts():
    """Each point its own dataset (the cuts of `subset_of`), one row per x: one series sorted by x, one
    clause per measure, no per-dataset prefix, and no FD across the cuts' own detectors (figure too)."""
    from medmem.report.experiment import across_datasets, experiment_figure

    rows = [row("s8", 0.0, 0.84, dataset="brats20", fd_encoder=397.0, kid_encoder=94.0),
            row("s2", 0.02, 0.87, dataset="brats20-2subjects", fd_encoder=630.0, kid_encoder=249.0),
            row("s4", 0.01, 0.85, dataset="brats20-4subjects", verdict="cannot judge", fd_encoder=143.0,
                kid_encoder=9.9)]
    table = experiment_table(rows, [8, 2, 4])
    assert across_datasets(table) and list(table["x"]) == [2, 4, 8]
    sentence = finding(table, "training subjects")
    assert sentence == ("Share above the held-out p99 falls from 2.0 % at training subjects 2 to 0 % at training "
                        "subjects 8; mean r falls from 0.87 at training subjects 2 to 0.84 at training subjects 8; "
                        "cannot judge s4 (training subjects 4): samples not yet like real images (FD not compared: "
                        "each dataset's copy detector has its own feature space).")
    fig = experiment_figure(table, "dataset size", "training subjects", sentence)
    assert len(fig.axes) == 1  # no FD axis
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "share above held-out p99" in labels and not any("(" in label for label in labels)
    # the same dataset at every x (training length) or each x on two datasets: per dataset, as before
    assert not across_datasets(experiment_table(*training_length_rows()))
    assert not across_datasets(experiment_table([row("a", 0, 0.8), row("a", 0, 0.8, dataset="cxr")], [1, 1]))


def test_the_command_writes_figure_table_and_markdown(tmp_path):
    rows, xs = training_length_rows()
    paths = []
    for r in rows:
        paths.append(tmp_path / f"{r['model']}.json")
        paths[-1].write_text(json.dumps(r).replace("NaN", "null"))
    out = tmp_path / "out"
    code, _, err = run_medmem("report", "experiment", "training length", "--axis", "kimg", "--rows", *paths,
                              "--x", *map(str, xs), "--figure", out / "figure.png", "--table", out / "table.csv",
                              "--markdown", out / "table.md")
    assert code == 0, err
    table = pd.read_csv(out / "table.csv")
    assert list(table["x"]) == [2, 12, 24, 40] and table["finding"].nunique() == 1
    assert table["finding"][0].startswith("Share above the held-out p99 rises from 0 % at kimg 2 to 12 % at kimg 40")
    md = (out / "table.md").read_text()
    assert md.startswith("# Experiment: training length") and "| 40 | brats20 | k40 |" in md
    assert "Finding: Share above" in md
    assert Image.open(out / "figure.png").size[0] > 400
    (tmp_path / "figure.png").write_bytes((out / "figure.png").read_bytes())
    code, _, err = run_medmem("report", "experiment", "x", "--rows", tmp_path / "none.json", "--x", "1",
                              "--figure", out / "f.png", "--table", out / "t.csv", "--markdown", out / "t.md")
    assert code == 2 and "none.json: file does not exist" in err and not (out / "f.png").exists()


def test_dp_points_carry_the_accountants_epsilon_and_delta_only_when_there_are_some():
    rows = [row("plain", 0.05, 0.9), row("dp8", 0.0, 0.8, dp_epsilon=7.995, dp_delta=5.05e-5),
            row("dp1", 0.0, 0.7, dp_epsilon=0.998, dp_delta=5.05e-5)]
    rows[0].update(dp_epsilon=float("nan"), dp_delta=float("nan"))  # as a row without DP-SGD holds them
    table = experiment_table(rows, ["no DP", "ε 8", "ε 1"])
    assert list(table["x"]) == ["no DP", "ε 8", "ε 1"]
    assert table["dp_epsilon"].tolist()[1:] == [7.995, 0.998] and np.isnan(table["dp_epsilon"][0])
    assert table["dp_delta"].tolist()[1:] == [5.05e-5, 5.05e-5]
    assert "dp_epsilon" not in experiment_table(rows[:1], ["no DP"])  # no DP-SGD point: no column
