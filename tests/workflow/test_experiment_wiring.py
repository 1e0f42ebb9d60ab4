"""The experiment keys of named generators in the workflow's plan (Snakemake dry runs, a few seconds
each): `datasets` restricts a generator's jobs, `network` samples another entry's network, `keep_kimg`
makes training declare the networks it keeps, `experiment` adds the experiment report."""

import copy
import re

import pytest
import yaml
from conftest import REPO, snakemake_command


def short() -> dict:
    return yaml.safe_load((REPO / "config" / "test.yaml").read_text())


def dry_run(config: dict, tmp_path, *targets) -> dict:
    """Snakemake's dry run (--forceall) of `config`: {rule: [job, ...]}, each job {input, output, shell}."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake_command(*targets, "-n", "-p", "--forceall", "--cores", "1", "--configfile", path, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs: dict = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        fields = dict(re.findall(r"^    (input|output): (.*)$", block, re.M))
        shell = block.split("reason:")[-1]
        jobs.setdefault(head[1], []).append({"input": fields.get("input", "").split(", "),
                                             "output": fields.get("output", "").split(", "), "shell": shell})
    return jobs


def failed_run(config: dict, tmp_path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake_command("-n", "--cores", "1", "--configfile", path, cwd=REPO)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def outputs(jobs: dict, rule: str) -> set:
    return {f for job in jobs.get(rule, []) for f in job["output"]}


def test_datasets_restricts_a_generators_jobs_to_its_datasets(tmp_path):
    config = short()
    config["models"]["stylegan2"]["datasets"] = ["brats20"]
    config["models"]["diffusion"]["datasets"] = ["cxr", "brats21"]
    jobs = dry_run(config, tmp_path)
    assert {j["output"][0] for j in jobs["train_stylegan2"]} == {"results/train/brats20/stylegan2/network.pt"}
    assert {j["output"][0] for j in jobs["train_diffusion"]} == {"results/train/brats21/diffusion/network.pt",
                                                                  "results/train/cxr/diffusion/network.pt"}
    rows = {f for f in outputs(jobs, "report_figures") if f.endswith("row.json")}
    assert rows == {"results/report/brats20/stylegan2/row.json", "results/report/brats21/diffusion/row.json",
                    "results/report/cxr/diffusion/row.json"}
    summary = jobs["report_summary"][0]["input"]
    assert sorted(summary) == sorted(rows)
    # every dataset is still prepared and calibrated
    assert len(jobs["calibrate"]) == 3


def test_datasets_naming_an_unknown_dataset_stops_the_workflow_naming_the_key(tmp_path):
    config = short()
    config["models"]["stylegan2"]["datasets"] = ["brats20", "brats2O"]
    out = failed_run(config, tmp_path)
    assert "config key 'models.stylegan2.datasets': no dataset 'brats2O' in datasets (brats20, brats21, cxr)" in out
