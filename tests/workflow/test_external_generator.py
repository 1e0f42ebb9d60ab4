"""A generator trained elsewhere in the workflow (`type: external`): config/audit.yaml, shortened."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_checkout, snakemake_command


@pytest.mark.slow
def test_audit_config_audits_an_external_generator_beside_the_embedded_one(tmp_path):
    work = copy_checkout(tmp_path / "repo")
    config = yaml.safe_load((REPO / "config" / "audit.yaml").read_text())
    config["models"]["stylegan2"].update(kimg=0.032, checkpoint_kimg=0.016, snapshot_kimg=0.032, log_kimg=0.016,
                                         samples=24, sample_batch=12)
    config["memorization"]["detector"] = {"steps": 10, "batch": 16}
    (work / "audit_short.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake_command("--cores", "2", "--configfile", "audit_short.yaml", cwd=work)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = work / "results"
    assert not (results / "train" / "brats20" / "vendor").exists()  # no training or sampling jobs for it
    # the vendor's samples are the embedded StyleGAN2's, imported: the same images, the same audit
    assert np.array_equal(np.load(results / "samples" / "brats20" / "vendor.npy"),
                          np.load(results / "samples" / "brats20" / "stylegan2.npy"))
    ours = pd.read_parquet(results / "memorization" / "brats20" / "stylegan2.parquet")
    theirs = pd.read_parquet(results / "memorization" / "brats20" / "vendor.parquet")
    pd.testing.assert_frame_equal(ours[["query", "view", "r_max", "train_index"]],
                                  theirs[["query", "view", "r_max", "train_index"]])
    assert json.loads((results / "quality" / "brats20" / "vendor.json").read_text())["n_samples"] == 24
    summary = pd.read_csv(results / "report" / "summary.csv").set_index("model")
    assert summary.loc["vendor", "type"] == "external" and summary.loc["vendor", "label"] == "Vendor model"
    assert summary.loc["stylegan2", "type"] == "stylegan2"
    assert summary.loc["vendor", "corr_mean"] == pytest.approx(summary.loc["stylegan2", "corr_mean"])
    for name in ("histogram", "pairs", "samples", "training", "view_pairs"):
        assert (results / "report" / "brats20" / "vendor" / f"{name}.png").stat().st_size > 1000
    assert json.loads((results / "samples" / "brats20" / "vendor.json").read_text())["sampler"] == "external"
