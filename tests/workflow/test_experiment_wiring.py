"""The experiment keys of named generators in the workflow's plan (Snakemake dry runs, a few seconds
each): `datasets` restricts a generator's jobs, `network` samples another entry's network, `keep_kimg`
makes training declare the networks it keeps, `experiment` adds the experiment report."""

import re

import yaml
from conftest import REPO, snakemake_command

from medmem.config import validate_config
from medmem.plan import plan_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


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


def test_network_entry_samples_the_source_network_with_its_own_options(tmp_path):
    config = short()
    config["models"]["diffusion"]["datasets"] = ["brats20"]
    config["models"]["stylegan2"]["datasets"] = ["brats20"]
    config["models"]["ddim3"] = {"type": "diffusion", "network": {"model": "diffusion"}, "datasets": ["brats20"],
                                 "sampler": "ddim", "steps": 3, "samples": 10, "sample_batch": 5}
    config["models"]["sg_psi"] = {"type": "stylegan2", "network": {"model": "stylegan2"}, "datasets": ["brats20"],
                                  "truncation": 0.7, "samples": 12, "sample_batch": 12}
    jobs = dry_run(config, tmp_path)
    # nothing trained for the entries that sample another's network
    assert {j["output"][0] for j in jobs["train_diffusion"]} == {"results/train/brats20/diffusion/network.pt"}
    assert {j["output"][0] for j in jobs["train_stylegan2"]} == {"results/train/brats20/stylegan2/network.pt"}
    sample = {j["output"][0]: j for j in jobs["sample_diffusion"] + jobs["sample_stylegan2"]}
    ddim = sample["results/samples/brats20/ddim3.npy"]
    assert ddim["input"] == ["results/train/brats20/diffusion/network.pt"]
    assert "--n 10 " in ddim["shell"] and "--sampler ddim --steps 3" in ddim["shell"]
    assert "--sampler dpm-solver++ --steps 5" in sample["results/samples/brats20/diffusion.npy"]["shell"]
    psi = sample["results/samples/brats20/sg_psi.npy"]
    assert psi["input"] == ["results/train/brats20/stylegan2/network.pt"] and "--truncation 0.7" in psi["shell"]
    figures = {j["output"][-1]: j for j in jobs["report_figures"]}
    assert "results/train/brats20/diffusion/log.csv" in figures["results/report/brats20/ddim3/row.json"]["input"]
    assert "--curve results/train/brats20/diffusion/log.csv" in figures["results/report/brats20/ddim3/row.json"][
        "shell"]
    assert len(jobs["report_figures"]) == 4
    # medmem plan counts the same jobs per rule
    planned = plan_config(validate_config(config, SCHEMA, REPO), REPO, tmp_path / "no-results")
    rows = {line.split()[0]: int(line.split()[1]) for line in planned.splitlines()[1:]
            if not line.startswith(("-", "total", "note"))}
    assert rows == {rule: len(js) for rule, js in jobs.items() if rule != "all"}


def test_network_entry_with_training_keys_stops_the_workflow(tmp_path):
    config = short()
    config["models"]["ddim3"] = {"type": "diffusion", "network": {"model": "diffusion"}, "lr": 0.1}
    assert "config key 'models.ddim3.lr': 'ddim3' trains nothing" in failed_run(config, tmp_path)


def test_keep_kimg_declares_the_kept_networks_and_a_network_entry_samples_one(tmp_path):
    config = short()
    config["models"]["stylegan2"]["datasets"] = ["cxr"]
    config["models"]["diffusion"].update(datasets=["brats20"], keep_kimg=[0.016, 0.048], segment_kimg=0.032)
    config["models"]["at16"] = {"type": "diffusion", "network": {"model": "diffusion", "kimg": 0.016},
                                "datasets": ["brats20"], "samples": 10, "sample_batch": 5}
    jobs = dry_run(config, tmp_path)
    run = "results/train/brats20/diffusion"
    (train,) = jobs["train_diffusion_diffusion_kept"]  # the entry's own rule: its outputs include the kept networks
    assert train["output"] == [f"{run}/network.pt", f"{run}/log.csv", f"{run}/network-0.016kimg.pt",
                               f"{run}/network-0.048kimg.pt"]
    assert train["input"][-1] == f"{run}/segments/0.032kimg.pt"  # after its segment
    assert "--keep-kimg 0.016 0.048" in train["shell"] and "--resume" in train["shell"]
    (segment,) = jobs["train_diffusion_segment"]
    assert "--keep-kimg 0.016 0.048" in segment["shell"] and "--stop-kimg 0.032" in segment["shell"]
    assert "train_diffusion" not in jobs
    assert [j["output"][0] for j in jobs["train_stylegan2"]] == ["results/train/cxr/stylegan2/network.pt"]
    assert "--keep-kimg " in jobs["train_stylegan2"][0]["shell"] + " "  # [] given explicitly (no kept network)
    samples = {j["output"][0]: j["input"] for j in jobs["sample_diffusion"]}
    assert samples == {"results/samples/brats20/diffusion.npy": [f"{run}/network.pt"],
                       "results/samples/brats20/at16.npy": [f"{run}/network-0.016kimg.pt"]}


def sampler_experiment() -> dict:
    config = short()
    config["models"]["stylegan2"]["datasets"] = ["cxr"]
    config["models"]["diffusion"].update(datasets=["brats20"], keep_kimg=[0.032],
                                         experiment={"name": "Training length", "x": 0.064, "axis": "kimg"})
    config["models"]["early"] = {"type": "diffusion", "network": {"model": "diffusion", "kimg": 0.032},
                                 "datasets": ["brats20"], "experiment": {"name": "Training length", "x": 0.032,
                                                                         "axis": "kimg"}}
    config["models"]["ddim3"] = {"type": "diffusion", "network": {"model": "diffusion"}, "datasets": ["brats20"],
                                 "sampler": "ddim", "steps": 3,
                                 "experiment": {"name": "sampler", "x": "ddim 3", "axis": "sampler"}}
    config["models"]["dpm5"] = {"type": "diffusion", "network": {"model": "diffusion"}, "datasets": ["brats20"],
                                "experiment": {"name": "sampler", "x": "dpm-solver++ 5", "axis": "sampler"}}
    return config


def test_experiment_tags_make_one_report_per_experiment(tmp_path):
    jobs = dry_run(sampler_experiment(), tmp_path)
    by_folder = {j["output"][0].split("/")[3]: j for j in jobs["report_experiment"]}
    assert set(by_folder) == {"training-length", "sampler"}
    length = by_folder["training-length"]
    assert length["output"] == ["results/report/experiments/training-length/figure.png",
                                "results/report/experiments/training-length/table.csv",
                                "results/report/experiments/training-length/table.md"]
    assert length["input"] == ["results/report/brats20/diffusion/row.json", "results/report/brats20/early/row.json"]
    assert ("medmem report experiment 'Training length' --axis kimg --rows results/report/brats20/diffusion/row.json"
            " results/report/brats20/early/row.json --x 0.064 0.032 --figure") in length["shell"]
    assert "--x 'ddim 3' 'dpm-solver++ 5'" in by_folder["sampler"]["shell"]
    # medmem plan counts the same jobs per rule (a generator's own training rule under its type's)
    planned = plan_config(validate_config(sampler_experiment(), SCHEMA, REPO), REPO, tmp_path / "no-results")
    rows = {line.split()[0]: int(line.split()[1]) for line in planned.splitlines()[1:]
            if not line.startswith(("-", "total", "note"))}
    counts = {re.sub(r"^train_(\w+?)_\w+_kept$", r"train_\1", rule): len(js) for rule, js in jobs.items()}
    counts.pop("all")
    assert rows == counts
    # the experiments are among the workflow's final outputs
    assert {f"results/report/experiments/{e}/figure.png" for e in by_folder} <= set(jobs["all"][0]["input"])


def test_no_experiment_tag_no_experiment_job(tmp_path):
    jobs = dry_run(short(), tmp_path)
    assert "report_experiment" not in jobs


def test_experiment_captions_render_with_the_jobs_parameters():
    """The captions are Jinja templates of RST (Snakemake's report renders them with snakemake.params)."""
    from types import SimpleNamespace

    from docutils.core import publish_parts
    from jinja2 import Environment

    params = SimpleNamespace(experiment="sampler", axis="sampler",
                             points=["ddim3 on brats20 at ddim 3", "dpm5 on brats20 at dpm-solver++ 5"])
    html = {}
    for name in ("experiment.rst", "experiment_table.rst"):
        text = (REPO / "workflow" / "report" / name).read_text()
        rst = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text).render(
            snakemake=SimpleNamespace(params=params))
        html[name] = publish_parts(rst, writer="html", settings_overrides={"report_level": 2})["body"]
        assert "<strong>sampler</strong>" in html[name] and "System Message" not in html[name], html[name]
    assert "(ddim3 on brats20 at ddim 3; dpm5 on brats20 at dpm-solver++ 5)" in " ".join(html["experiment.rst"].split())


EXPERIMENT_POINTS = {  # config/experiments.yaml: experiment folder -> its points' generators, in config order
    "training-length-diffusion": ["exp-diffusion", "exp-diffusion-1k", "exp-diffusion-2k", "exp-diffusion-4k", "exp-diffusion-6k",
                                  "exp-diffusion-8k", "exp-diffusion-12k", "exp-diffusion-16k"],
    "training-length-stylegan2": ["exp-stylegan2", "exp-stylegan2-2k", "exp-stylegan2-4k", "exp-stylegan2-8k", "exp-stylegan2-16k",
                                  "exp-stylegan2-24k", "exp-stylegan2-32k", "exp-stylegan2-48k"],
    "sampler": ["exp-ancestral-1000", "exp-ddim-10", "exp-ddim-50", "exp-dpm-10", "exp-dpm-25", "exp-dpm-50"],
    "dataset-size": ["exp-subjects-2", "exp-subjects-4", "exp-subjects-8"],
    "augmentation-diffusion": ["exp-augmented-diffusion", "exp-plain-diffusion"],
    "augmentation-stylegan2": ["exp-augmented-stylegan2", "exp-plain-stylegan2"],
    "differential-privacy": ["exp-dp-eps8", "exp-dp-eps1", "exp-dp-none"],
    "model-size": ["exp-base16", "exp-base32", "exp-base64"],
}


def test_the_experiments_config_plans_each_experiment_on_the_miniature(tmp_path):
    """`--configfile config/miniature.yaml config/experiments.yaml`, as the README runs it: one report per
    experiment over its points; each point samples the network the experiment means (kept networks of one
    run for training length, the sampler on one network, trained cuts, DP-SGD, augmentation, widths)."""
    proc = snakemake_command("-n", "-p", "--forceall", "--cores", "1", "--configfile", "config/miniature.yaml",
                             "config/experiments.yaml", cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs: dict = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            fields = dict(re.findall(r"^    (input|output): (.*)$", block, re.M))
            jobs.setdefault(head[1], []).append({"input": fields.get("input", "").split(", "),
                                                 "output": fields.get("output", "").split(", "),
                                                 "shell": block.split("reason:")[-1]})
    reports = {j["output"][0].split("/")[3]: j for j in jobs["report_experiment"]}
    assert set(reports) == set(EXPERIMENT_POINTS)
    for folder, points in EXPERIMENT_POINTS.items():
        datasets = {"exp-subjects-2": "brats20-2subjects", "exp-subjects-4": "brats20-4subjects"}
        assert reports[folder]["input"] == [f"results/report/{datasets.get(p, 'brats20')}/{p}/row.json"
                                            for p in points], folder
    trained = {j["output"][0] for rule in jobs if rule.startswith("train_") for j in jobs[rule]}
    # the miniature's generators on its three datasets only; the experiments' on brats20 or its cuts
    assert {f for f in trained if "/stylegan2/" in f or "/diffusion/" in f} == {
        f"results/train/{d}/{m}/network.pt" for d in ("brats20", "brats21", "cxr") for m in ("stylegan2", "diffusion")}
    assert {f.split("/")[3] for f in trained if "/exp-" in f} == {
        "exp-diffusion", "exp-stylegan2", "exp-subjects-2", "exp-subjects-4", "exp-augmented-diffusion",
        "exp-augmented-stylegan2", "exp-dp-eps8", "exp-dp-eps1", "exp-base16", "exp-base64"}
    kept = next(j for j in jobs["train_diffusion_exp_diffusion_kept"])
    assert {f"results/train/brats20/exp-diffusion/network-{k}kimg.pt" for k in (1, 2, 4, 6, 8, 12, 16)} <= set(
        kept["output"])
    shells = {j["output"][0].split("/")[3]: j["shell"] for rule in jobs if rule.startswith("train_") for j in jobs[rule]}
    assert "--dp-epsilon 8" in shells["exp-dp-eps8"] and "--dp-epsilon 1 " in shells["exp-dp-eps1"]
    assert "--dp-epsilon" not in shells["exp-diffusion"] or "--dp-epsilon none" in shells["exp-diffusion"]
    assert "--flip" in shells["exp-augmented-diffusion"] and "--translate 2" in shells["exp-augmented-stylegan2"]
    assert "--base 64" in shells["exp-base64"] and "--base 16" in shells["exp-base16"]
    samples = {j["output"][0].split("/")[3][: -len(".npy")]: j for r in ("sample_diffusion", "sample_stylegan2")
               for j in jobs[r]}
    assert samples["exp-diffusion-6k"]["input"] == ["results/train/brats20/exp-diffusion/network-6kimg.pt"]
    assert samples["exp-ddim-50"]["input"] == ["results/train/brats20/exp-diffusion/network.pt"]
    assert "--sampler ddim --steps 50" in samples["exp-ddim-50"]["shell"]
    assert "--sampler ancestral " in samples["exp-ancestral-1000"]["shell"]
    assert "--steps" not in samples["exp-ancestral-1000"]["shell"]  # every training step
    assert {j["output"][0] for j in jobs["prepare_subset"]} == {
        "results/data/brats20-2subjects/train.npy", "results/data/brats20-4subjects/train.npy"}
