"""The workflow's configurations planned and run by Snakemake: data from image folders, partial and
image-level configs, the paper config's chained jobs, the plan against Snakemake's own count."""

import re

import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_checkout, paper_dataset_paths, snakemake_command

from medmem.config import validate_config
from medmem.plan import plan_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_workflow_prepares_a_dataset_from_an_image_folder(study, tmp_path):
    import yaml
    from conftest import REPO, snakemake_command

    root, _, _ = study
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"] = {"external": {"kind": "images", "source": str(root / "train"),
                                       "holdout_source": str(root / "holdout"), "channels": ["T1", "FLAIR"],
                                       "size": 24}}
    (tmp_path / "images.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake_command("results/memorization/external/calibration.csv", "-n", "--cores", "1", "--forceall",
                             "-p", "--configfile", tmp_path / "images.yaml", cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"prepare_images\s+1", out.split("Job stats")[-1])
    assert (f"medmem prepare images {root / 'train'} results/data/external --holdout {root / 'holdout'} "
            "--channels T1 FLAIR --size 24") in out
    config["datasets"]["external"]["split"] = {"holdout_fraction": 0.2}
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake_command("-n", "--cores", "1", "--configfile", tmp_path / "both.yaml", cwd=REPO)
    assert proc.returncode != 0 and "datasets.external.split.holdout_fraction" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_workflow_calibrates_an_image_folder_dataset_as_the_audit_does(study, audited, tmp_path):
    """The rules run prepare_images → memorization → plant → calibrate on the study-layout folders; the
    held-out baseline equals the one `medmem audit` computed from the same files."""
    import yaml
    from conftest import REPO, copy_checkout, snakemake_command

    root, _, _ = study
    work = copy_checkout(tmp_path / "repo")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.setdefault("memorization", {})["detector"] = {"enabled": False}  # as `audited` (--detector-steps 0)
    config["datasets"] = {"ext": {"kind": "images", "source": str(root / "train"),
                                  "holdout_source": str(root / "holdout"), "size": 24}}
    (work / "ext.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake_command("results/memorization/ext/calibration.csv", "--cores", "2", "--configfile", "ext.yaml",
                             cwd=work, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mine = pd.read_csv(work / "results" / "memorization" / "ext" / "holdout_baseline.csv")
    audit = pd.read_csv(audited / "holdout_baseline.csv")
    pd.testing.assert_frame_equal(mine, audit)
    slices = pd.read_csv(work / "results" / "data" / "ext" / "slices.csv")
    assert slices.loc[0, "name"] == "Subject_1_slice_40" and slices.loc[0, "files"].startswith("T1/")


def test_plan_counts_the_jobs_snakemake_plans(tmp_path):
    """The embedded default config: jobs per rule as in Snakemake's own dry run."""
    import re

    import yaml
    from conftest import copy_checkout, snakemake_command

    from medmem.plan import plan_config

    work = copy_checkout(tmp_path / "repo")
    proc = snakemake_command("-n", cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = proc.stdout[proc.stdout.index("Job stats:"):]
    planned = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    planned.pop("all")
    planned.pop("total")
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), SCHEMA, REPO)
    out = plan_config(config, REPO, tmp_path / "no-results")
    rows = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:]
            if not line.startswith(("-", "total", "note"))}
    assert rows == planned


def test_a_partial_configfile_says_it_replaces_the_default_and_what_it_lacks(tmp_path):
    work = copy_checkout(tmp_path / "repo")
    (work / "partial.yaml").write_text(yaml.safe_dump({"models": {"stylegan2": {"type": "stylegan2", "kimg": 1}}}))
    proc = snakemake_command("-n", "--cores", "1", "--configfile", "partial.yaml", cwd=work)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    message = next(line for line in out.splitlines() if "replaces the embedded default" in line)
    assert "--configfile" in message and "partial.yaml" in message and "config/config.yaml" in message
    assert "lacks the required key datasets" in message
    assert "is a required property" not in out


def test_image_level_config_key_reaches_the_command_and_is_cxr_only(tmp_path):
    from medmem.config import validate_config
    from medmem.errors import InputError

    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"]["cxr"]["split"]["image_level"] = True
    validate_config(config, schema, REPO)
    for dataset, key, value, words in [("brats20", "image_level", True, "only for kind cxr"),
                                       ("brats20", "holdout", 0, "at least 1 held-out subject"),
                                       ("cxr", "holdout_fraction", 0, "must be above 0")]:
        bad = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        bad["datasets"][dataset]["split"][key] = value
        with pytest.raises(InputError, match=f"datasets.{dataset}.split.{key}'.*{words}"):
            validate_config(bad, schema, REPO)
    work = copy_checkout(tmp_path / "repo")
    (work / "image_level.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake_command("-n", "-p", "--cores", "1", "--configfile", "image_level.yaml", "--forceall",
                             "results/data/cxr/train.npy", cwd=work)
    assert proc.returncode == 0, proc.stderr
    command = next(line for line in proc.stdout.splitlines() if "medmem prepare cxr" in line)
    assert "--holdout-fraction 0.15 --seed 0 --image-level-split" in command


def test_the_paper_config_plans_chained_training_and_sharded_sampling_jobs(tmp_path):
    import re

    import yaml
    from conftest import REPO, paper_dataset_paths, snakemake_command

    proc = snakemake_command("-n", "-p", "--cores", "1", "--configfile", "config/paper.yaml",
                             paper_dataset_paths(tmp_path), "--forceall", cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    stats = out.split("Job stats")[-1]
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["models"]
    # 25,000 kimg in segments of 5,000: 4 segment jobs and the final one; diffusion 30,000 in 1,000: 29 + 1
    assert paper["stylegan2"]["segment_kimg"] == 5000 and paper["diffusion"]["segment_kimg"] == 1000
    assert re.search(r"train_stylegan2_segment\s+12\b", stats) and re.search(r"train_stylegan2\s+3\b", stats)
    assert re.search(r"train_diffusion_segment\s+87\b", stats) and re.search(r"train_diffusion\s+3\b", stats)
    n = paper["diffusion"]["sample_shards"]
    assert n > 16 and re.search(rf"sample_diffusion\s+{3 * n}\b", stats) and re.search(r"sample_stylegan2\s+3\b", stats)
    assert ("--resume results/train/cxr/diffusion/segments/28000kimg.pt --stop-kimg 29000 --segment-output "
            "results/train/cxr/diffusion/segments/29000kimg.pt --time-limit-min 1440") in out
    assert "--resume results/train/cxr/diffusion/segments/29000kimg.pt --time-limit-min 1440" in out
    assert f"results/samples/cxr/diffusion.{n - 1}-of-{n}.npy --n 100000" in out and f"--shard {n - 1}-of-{n}" in out
    # the search reads every sampling shard, split into its own four jobs
    shards = " ".join(f"results/samples/cxr/diffusion.{i}-of-{n}.npy" for i in range(n))
    assert (f"medmem memorization results/data/cxr/train.npy {shards} "
            "results/memorization/cxr/shards/diffusion.3-of-4.parquet --slices results/data/cxr/slices.csv") in out


def test_quality_gets_the_copy_detector_only_while_it_is_enabled(tmp_path):
    """`medmem quality --encoder detector.pt --train train.npy` (FD / KID in its feature space) while
    memorization.detector.enabled; neither option, nor the detector's training job, when it is off."""
    work = copy_checkout(tmp_path / "repo")
    target = "results/quality/brats20/diffusion.json"
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    for enabled in (True, False):
        config.setdefault("memorization", {}).setdefault("detector", {})["enabled"] = enabled
        (work / "detector.yaml").write_text(yaml.safe_dump(config))
        proc = snakemake_command("-n", "-p", "--cores", "1", "--configfile", "detector.yaml", "--forceall", target,
                                 cwd=work)
        assert proc.returncode == 0, proc.stderr
        command = next(line for line in proc.stdout.splitlines() if "medmem quality" in line)
        wanted = "--encoder results/detector/brats20/detector.pt --train results/data/brats20/train.npy"
        assert (wanted in command) is enabled, command
        assert ("--encoder" in command) is enabled and ("rule detector_train:" in proc.stdout) is enabled
