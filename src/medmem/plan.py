"""What a run costs: per rule, jobs × GPUs × estimated hours, and totals, for a workflow config.

The estimates combine the work a config asks for (kimg, samples and sampler steps, query and
training images) with the arithmetic cost of medmem's own networks (floating-point operations counted
by `torch.utils.flop_counter` on the meta device: nothing is computed) and throughput figures that
were measured or published elsewhere (`FIGURES`, each with its source). Hours are A100 hours; a
figure measured on another GPU is converted by the ratio of the two GPUs' dense bf16 peaks. Rules
without a figure (data preparation, Inception features, CPU steps) are listed with their runtime
request, which bounds them.

Sources of the figures:
- StyleGAN2: NVlabs' published training speed at 256² on A100s, NVlabs/stylegan3 docs/configs.md
  lines 181-184 (`--cfg=stylegan2 --cbase=16384 --map-depth=2`, 3 channels: 12.53 / 6.36 / 3.20 /
  2.38 s/kimg on 1 / 2 / 4 / 8 GPUs), scaled by the ratio of the configured generator +
  discriminator forward operations to that network's. For the study's network (channel base 32768,
  8 mapping layers, 5 channels) the ratio is 3.01: 9.6 s/kimg on 4 A100s, 25,000 kimg in 2.8 days,
  beside the study's "about 3 days" on A100s (Akbar, Wang & Eklund 2025).
- Diffusion: `benchmarks/gpu_check.sh` on one H200 (2026-11-29, bf16 autocast, channels_last, the
  study's 41.1 M-parameter UNet at 256², batch 32): sampling 154.1 ms per solver step of 32 images,
  with the UNet's 171 GFLOP per evaluation 35.5 TFLOP/s; training 66.95 images/s at three
  evaluations per image (forward and backward, the usual 1 + 2 rule), 34.3 TFLOP/s. Scaled to an
  A100 by the dense bf16 peaks (312 against 989 TFLOP/s, NVIDIA A100 and H100/H200 datasheets):
  11.2 TFLOP/s. In float32 (the study's precision) expect slower. The study reports about 22 days
  of diffusion training in float32 without its length in images (its train script runs until
  stopped, lr_anneal_steps=0 in muhamadusman/Synthetic_Memorization diffusion/image_train.py).
  Replace the figure with your own GPU's (`medmem plan --figure diffusion_tflops=...`).
- Memorization search: 2 operations per pixel per query-training pair and channel at 83 % of the
  matrix-product peak (README: 83-93 % of a bare `torch.mm`, benchmarks/bench_memorization.py),
  on an A100's TF32 peak of 156 TFLOP/s (NVIDIA A100 datasheet). Reading the queries from disk is
  not included.
- StyleGAN2 sampling runs the generator once per image; training runs it forward and backward at
  least twice per image plus the discriminator, so one GPU's training s/kimg bounds it from above.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from medmem.config import slug
from medmem.errors import InputError

# NVlabs/stylegan3 docs/configs.md:181-184: s/kimg on A100s, --cfg=stylegan2 at 256², cbase 16384, map 2
NVLABS_STYLEGAN2_A100 = {1: 12.53, 2: 6.36, 4: 3.20, 8: 2.38}
NVLABS_REFERENCE = dict(size=256, channels=3, channel_base=16384, channel_max=512, mapping_layers=2, z_dim=512)

FIGURES = {
    "diffusion_tflops": 11.2,  # effective TFLOP/s of one A100 on the UNet (the H200 sampling figure × 312/989)
    "search_tflops": 0.83 * 156.0,  # effective TFLOP/s of one A100 on the search's TF32 products
    "stylegan2_scale": 1.0,  # multiplies NVlabs' s/kimg (1: as published); set from gpu_check's ratio
}
FIGURE_HELP = {
    "diffusion_tflops": "effective TFLOP/s of one GPU on the diffusion UNet (A100, from an H200 sampling figure)",
    "search_tflops": "effective TFLOP/s of one GPU on the memorization search's products (A100 TF32 × 0.83)",
    "stylegan2_scale": "our s/kimg divided by NVlabs' published s/kimg (benchmarks/bench_stylegan2.py prints it)",
}
# Slices of a BraTS subject that pass the study's 15 % rule: 311 for 3 subjects of `medmem phantoms brats`
# at the real 240×240×155 size on MNI152 anatomy (measured for this module).
BRATS_SLICES_PER_SUBJECT = 104
KERMANY_IMAGES = 5856  # the Kermany et al. 2018 chest x-ray set: 5,856 JPEGs in train/test/val
PLANTED_KINDS = 6  # medmem.memorization.planted.PERTURBATIONS
PLANTED_ROBUST_KINDS = 4  # PERTURBATIONS_ROBUST and "partial" (an upper bound: partial needs tumours)
# DP-SGD's training step over a plain one (Opacus's per-sample gradients, clipping and noise): 0.675 s
# against 0.372 s, benchmarks/bench_privacy.py on the embedded diffusion block, 2 CPU cores. Not measured
# on a GPU; per-sample gradients there cost at least as much again as the backward pass.
DP_STEP_RATIO = 1.81
TRAIN_MARGIN = 0.9  # segment and shard suggestions leave 10 % of a job's runtime request free
RULE_ORDER = ["phantoms", "prepare_brats", "prepare_cxr", "prepare_subset",
              "train_stylegan2", "train_diffusion", "sample_stylegan2",
              "sample_diffusion", "import_samples", "plant", "memorization_shard", "memorization_gather", "detector_train",
              "detector_search", "calibrate",
              "inception_features", "quality", "report_figures", "report_summary", "report_experiment"]
UNESTIMATED_RUNTIME = 60  # minutes: the profile's default-resources for rules config `resources` omits


@dataclass
class Row:
    """One rule of the plan: `jobs` jobs of `gpus` GPUs each; `hours`: the longest job's estimate and
    `job_hours` the sum over its jobs (None: no figure, bounded by `runtime_h`, the rule's runtime
    request in hours)."""
    rule: str
    jobs: int
    gpus: int
    hours: float | None
    job_hours: float | None
    runtime_h: float
    source: str

    @property
    def gpu_hours(self) -> float:
        """Estimated GPU hours of all its jobs (0 without an estimate)."""
        return self.gpus * (self.job_hours or 0.0)

    @property
    def requested_gpu_hours(self) -> float:
        """GPU hours the jobs request from the scheduler: jobs × gpus × `runtime_h` (>= `gpu_hours`'s bound)."""
        return self.jobs * self.gpus * self.runtime_h


def stylegan2_flops(size: int, channels: int, channel_base: int, channel_max: int, mapping_layers: int,
                    z_dim: int, **_) -> float:
    """Forward floating-point operations per image of medmem's StyleGAN2 generator plus discriminator,
    as torch's FlopCounterMode counts them (a multiply-add is 2; matmuls and convolutions only), on
    the meta device (no memory, no weights). size: resolution in pixels; the rest as `Generator`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medmem.models.stylegan2 import Discriminator, Generator

    with torch.device("meta"):
        g = Generator(size, channels, z_dim, z_dim, mapping_layers, channel_base, channel_max)
        d = Discriminator(size, channels, channel_base, channel_max)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            d(g(torch.zeros(4, z_dim)))
    return counter.get_total_flops() / 4


def unet_flops(size: int, channels: int, base: int, layers: int, mults, attention, heads: int, **_) -> float:
    """Floating-point operations of one evaluation of medmem's diffusion UNet on one image, as torch's
    FlopCounterMode counts them (a multiply-add is 2), on the meta device. Arguments as `unet_config`
    (attention: resolutions in pixels)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medmem.models.unet import build_unet, unet_config

    config = unet_config(channels, size, base=base, layers=layers, mults=tuple(mults),
                         attention_resolutions=tuple(attention), heads=heads)
    with torch.device("meta"):
        net = build_unet(config)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops()


def stylegan2_s_per_kimg(gpus: int, flops: float, reference_flops: float, scale: float = 1.0) -> float:
    """Training seconds per 1,000 images on `gpus` A100s for a network of `flops` forward operations:
    NVlabs' published figure for that GPU count (one GPU's divided by the count where NVlabs gives
    none) times the operations ratio to NVlabs' measured network, times `scale`."""
    n = max(gpus, 1)
    published = NVLABS_STYLEGAN2_A100.get(n, NVLABS_STYLEGAN2_A100[1] / n)
    return published * flops / reference_flops * scale


def dataset_images(name: str, dataset: dict, base_dir: Path = Path("."), results: Path = Path("results"),
                   given: dict | None = None) -> tuple[int, int, str]:
    """(training images, held-out images, where the numbers come from) for one config dataset.

    In order: `given` (train, holdout), the prepared `results/data/<name>/dataset.json` (when its kind and
    size are the config's), an estimate:
    BraTS subjects (from the subject order CSV or the seeded split) × `BRATS_SLICES_PER_SUBJECT`;
    chest x-rays: the Kermany set's 5,856 images split by `holdout_fraction`; phantom BraTS: every
    slice of the phantom volumes (an upper bound). Raises InputError for an unreadable subject order."""
    if given and name in given:
        train, holdout = given[name]
        return train, holdout, "given (--images)"
    prepared = results / "data" / name / "dataset.json"
    info = json.loads(prepared.read_text()) if prepared.is_file() else {}
    # another config's data under the same name (the embedded default's 32² phantoms) is not this one's
    if info and (info.get("kind"), info.get("size")) == (dataset["kind"], dataset["size"]):
        return info["images"]["train"], info["images"]["holdout"], str(prepared)
    split = dataset["split"]
    if dataset["kind"] == "brats":
        if "subject_order" in split:
            path = base_dir / split["subject_order"]
            try:
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
                counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "holdout")}
            except (OSError, KeyError) as exc:
                raise InputError(f"{path}: cannot read the subject order ({exc})") from None
            source = f"{path.name} subjects"
        else:
            counts = {"train": split["train"], "holdout": split.get("holdout", 0)}
            source = "config split"
        if dataset["source"] == "phantom":
            per, how = dataset["phantom"]["shape"][2], "every phantom slice (upper bound)"
        else:
            per, how = BRATS_SLICES_PER_SUBJECT, f"{BRATS_SLICES_PER_SUBJECT} slices each (measured on MNI152 phantoms)"
        return counts["train"] * per, counts["holdout"] * per, f"{source} × {how}"
    total = dataset["phantom"]["subjects"] if dataset["source"] == "phantom" else KERMANY_IMAGES
    holdout = round(total * split.get("holdout_fraction", 0.1))
    return total - holdout, holdout, ("phantom images" if dataset["source"] == "phantom"
                                      else "Kermany set, 5,856 images") + " split by holdout_fraction"


def subset_images(name: str, datasets: dict, base_dir: Path = Path("."), results: Path = Path("results"),
                  given: dict | None = None) -> tuple[int, int, str]:
    """(training images, held-out images, where the numbers come from) of a dataset with `subset_of`
    (`datasets`: the validated config's, kind and size filled in from the parent).

    In order: `given`; its own prepared dataset.json (when kind, size and subset_of are the config's);
    the first train_subjects training subjects counted in the parent's prepared slices.csv (when the
    parent's dataset.json has the config's kind and size), with the parent's held-out images; else the
    parent's estimate (`dataset_images`, or this function for a subset's subset) × train_subjects / the
    parent's training subjects (`medmem.config.training_subjects`), or train_subjects images where
    those are unknown before preparation (one image per chest x-ray patient; a lower bound)."""
    from medmem.config import training_subjects
    from medmem.data.subset import count_subset_images

    if given and name in given:
        train, holdout = given[name]
        return train, holdout, "given (--images)"
    d = datasets[name]
    parent, n = d["subset_of"]["dataset"], d["subset_of"]["train_subjects"]

    def matches(info: dict) -> bool:  # not another config's data under the same name
        return bool(info) and (info.get("kind"), info.get("size")) == (d["kind"], d["size"])

    prepared = results / "data" / name / "dataset.json"
    info = json.loads(prepared.read_text()) if prepared.is_file() else {}
    mine = info.get("subset_of", {}) if matches(info) else {}
    if (mine.get("dataset"), mine.get("train_subjects")) == (parent, n):
        return info["images"]["train"], info["images"]["holdout"], str(prepared)
    parent_dir = results / "data" / parent
    parent_info = json.loads((parent_dir / "dataset.json").read_text()) if (parent_dir / "dataset.json").is_file() \
        else {}
    if matches(parent_info) and (parent_dir / "slices.csv").is_file():
        return (count_subset_images(parent_dir / "slices.csv", n), parent_info["images"]["holdout"],
                f"first {n} training subjects of {parent_dir / 'slices.csv'}")
    p = datasets[parent]
    train, holdout, how = (subset_images(parent, datasets, base_dir, results, given) if "subset_of" in p
                           else dataset_images(parent, p, base_dir, results, given))
    subjects = training_subjects(p, base_dir)
    if subjects:
        return round(train * n / subjects), holdout, f"{n} of the {subjects} training subjects of {parent} ({how})"
    return n, holdout, f"{n} training subjects of {parent} × 1 image (a lower bound; {parent}: {how})"


def _resources(config: dict, rule: str) -> tuple[int, float]:
    r = config.get("resources", {}).get(rule)
    if not r:
        return 0, UNESTIMATED_RUNTIME / 60
    gpus = r.get("gpu") or int(str(r.get("gres") or "gpu:0").split(":")[-1])
    return gpus, r.get("runtime", UNESTIMATED_RUNTIME) / 60


def make_plan(config: dict, images: dict[str, tuple[int, int]], figures: dict | None = None,
              flops: dict | None = None, base_dir: Path = Path(".")) -> tuple[list[Row], list[str]]:
    """The plan of a validated config (defaults filled in): rows per rule and per-job advice.

    `images`: dataset name → (training images, held-out images). `figures`: overrides of `FIGURES`.
    `flops`: precomputed operation counts {"stylegan2": ..., "stylegan2_reference": ..., "diffusion":
    ...} per dataset-independent network (counted here when absent; they depend on size and channels,
    so keys may also be "<model>@<size>x<channels>")."""
    fig = {**FIGURES, **(figures or {})}
    flops = dict(flops or {})
    rows: dict[str, Row] = {}
    advice: list[str] = []

    def add(rule, jobs, hours, source, total=None):
        """`jobs` jobs of which the longest takes `hours`, `total` hours together (default jobs × hours)."""
        gpus, runtime_h = _resources(config, rule)
        total = None if hours is None else (jobs * hours if total is None else total)
        if rule in rows:
            row = rows[rule]
            row.jobs += jobs
            if hours is not None:
                row.hours = max(row.hours or 0.0, hours)  # the longest job of the rule
                row.job_hours = (row.job_hours or 0.0) + total
        else:
            rows[rule] = Row(rule, jobs, gpus, hours, total, runtime_h, source)

    def network(kind, size, channels, m=None):
        key = f"{kind}@{size}x{channels}"
        if key not in flops and kind in flops:
            flops[key] = flops[kind]
        if key not in flops:
            if kind == "stylegan2":
                flops[key] = stylegan2_flops(size, channels, **{k: m[k] for k in (
                    "channel_base", "channel_max", "mapping_layers", "z_dim")})
            elif kind == "stylegan2_reference":
                flops[key] = stylegan2_flops(**NVLABS_REFERENCE)
            else:
                flops[key] = unet_flops(size, channels, **{k: m[k] for k in ("base", "layers", "mults", "attention",
                                                                                "heads")})
        return flops[key]

    models = config.get("models", {})
    speed: dict[str, float] = {}  # model → the slowest dataset's training s/kimg
    sampling = 0.0  # the largest diffusion sampling task, GPU hours
    memo = config["memorization"]
    shards = memo["shards"]
    for name, d in config["datasets"].items():
        size = d["size"]
        channels = 5 if d["kind"] == "brats" else 1
        train_n, holdout_n = images[name]
        pixels = size * size * channels
        if d.get("source") == "phantom":
            add("phantoms", 1, None, "runtime request")
        add("prepare_subset" if "subset_of" in d else f"prepare_{d['kind']}", 1, None, "runtime request")
        add("plant", 1, None, "runtime request")
        if any(name in (m["samples"] if m["type"] == "external" else m.get("datasets", [name]))
               for m in models.values()):  # the training images' features, for a generator's FID
            add("inception_features", 1, None, "runtime request")
        add("calibrate", 1, None, "runtime request")
        kinds = PLANTED_KINDS + (PLANTED_ROBUST_KINDS if memo["planted"].get("robust") else 0)
        queries = {"holdout": holdout_n, "planted": min(memo["planted"]["per_perturbation"], train_n) * kinds}
        detector = memo.get("detector", {}).get("enabled", False)
        if detector:
            add("detector_train", 1, None, "runtime request")
        for model, m in models.items():
            if m["type"] == "external":  # trained and sampled elsewhere: its samples are imported
                if name not in m["samples"]:
                    continue
                add("import_samples", 1, None, "runtime request")
                queries[model] = external_sample_count(m["samples"][name], base_dir)
                add("quality", 1, None, "runtime request")
                add("report_figures", 1, None, "runtime request")
                continue
            if name not in m.get("datasets", [name]):  # key datasets: not run on this one
                continue
            queries[model] = m["samples"]
            trains = not m.get("network")  # key network: samples another entry's network (its architecture)
            if not trains:
                from medmem import params

                sampling_keys = params.keys(params.node(f"$defs.{m['type']}"), "sample") + ["sample_shards"]
                m = {**models[m["network"]["model"]], **{k: m[k] for k in sampling_keys if k in m}}
            gpus, _ = _resources(config, f"train_{m['type']}")
            segment = m.get("segment_kimg")
            segments = math.ceil(m["kimg"] / segment) if segment else 1
            per_segment = min(segment or m["kimg"], m["kimg"])
            if m["type"] == "stylegan2":
                s_kimg = stylegan2_s_per_kimg(gpus, network("stylegan2", size, channels, m),
                                              network("stylegan2_reference", 256, 3), fig["stylegan2_scale"])
                one_gpu = stylegan2_s_per_kimg(1, network("stylegan2", size, channels, m),
                                               network("stylegan2_reference", 256, 3), fig["stylegan2_scale"])
                if trains:
                    add("train_stylegan2", segments, per_segment * s_kimg / 3600,
                        "NVlabs A100 s/kimg × operations ratio", m["kimg"] * s_kimg / 3600)
                shards_n = m.get("sample_shards", 1)
                add("sample_stylegan2", shards_n, math.ceil(m["samples"] / shards_n) / 1000 * one_gpu / 3600,
                    "bound: 1-GPU training s/kimg", m["samples"] / 1000 * one_gpu / 3600)
                if trains:
                    speed[model] = max(speed.get(model, 0.0), s_kimg)
            else:
                unet = network("diffusion", size, channels, m)
                s_kimg = 3 * unet * 1000 / (fig["diffusion_tflops"] * 1e12) / max(gpus, 1)
                private = m.get("dp_epsilon") is not None
                if private:
                    s_kimg *= DP_STEP_RATIO
                if trains:
                    add("train_diffusion", segments, per_segment * s_kimg / 3600,
                        "UNet operations / H200-measured UNet speed" + (f" × {DP_STEP_RATIO} (DP-SGD)" if private else ""),
                        m["kimg"] * s_kimg / 3600)
                steps = m["timesteps"] if m["sampler"] == "ancestral" else (m.get("steps") or m["timesteps"])
                shards_n = m.get("sample_shards", 1)
                per_image_h = steps * unet / (fig["diffusion_tflops"] * 1e12) / 3600
                add("sample_diffusion", shards_n, math.ceil(m["samples"] / shards_n) * per_image_h,
                    f"UNet operations × {steps} steps / H200-measured UNet speed", m["samples"] * per_image_h)
                if trains:
                    speed[model] = max(speed.get(model, 0.0), s_kimg)
                if m["samples"] * per_image_h > sampling:
                    sampling, sampled_most = m["samples"] * per_image_h, model
            add("quality", 1, None, "runtime request")
            add("report_figures", 1, None, "runtime request")
        for q, n in queries.items():
            per_query_h = 2 * train_n * pixels / (fig["search_tflops"] * 1e12) / 3600
            add("memorization_shard", shards, math.ceil(n / shards) * per_query_h, "2·Q·T·C·H·W / A100 TF32 × 0.83",
                n * per_query_h)
            if shards > 1:
                add("memorization_gather", 1, None, "runtime request")
            if detector:
                add("detector_search", 1, None, "runtime request")
    if models:
        add("report_summary", 1, None, "runtime request")
    experiments = {slug(m["experiment"]["name"]) for m in models.values() if m.get("experiment")}
    if experiments:  # one report per experiment name
        add("report_experiment", len(experiments), None, "runtime request")
    for r in rows.values():
        if r.hours is not None and r.hours > r.runtime_h:
            advice.append(f"{r.rule}: a job needs about {r.hours:.1f} h, more than its {r.runtime_h:.1f} h runtime "
                          "request (SLURM would end it)")
    for model, s_kimg in speed.items():
        advice.append(_segment_advice(config, model, models[model], s_kimg))
    if sampling:
        advice.append(_shard_advice(config, models[sampled_most], sampling))
    ordered = sorted(rows.values(), key=lambda r: RULE_ORDER.index(r.rule) if r.rule in RULE_ORDER else len(RULE_ORDER))
    return ordered, list(dict.fromkeys(advice))


def _segment_advice(config, model, m, s_kimg) -> str:
    rule = f"train_{m['type']}"
    _, runtime_h = _resources(config, rule)
    fits = runtime_h * TRAIN_MARGIN * 3600 / s_kimg
    name = rule if model == m["type"] else f"{rule} ({model})"
    return (f"{name}: about {s_kimg:.2f} s/kimg on its GPUs: segment_kimg ≤ {fits:,.0f} keeps a "
            f"segment within {TRAIN_MARGIN:.0%} of its {runtime_h:g} h runtime request")


def _shard_advice(config, m, total_h) -> str:
    _, runtime_h = _resources(config, "sample_diffusion")
    need = math.ceil(total_h / (runtime_h * TRAIN_MARGIN))
    return (f"sample_diffusion: {total_h:,.0f} GPU hours for {m['samples']:,} samples; "
            f"sample_shards ≥ {need} keeps a shard within {TRAIN_MARGIN:.0%} of its {runtime_h:g} h runtime request")


def format_plan(rows: list[Row], advice: list[str], notes: list[str] = ()) -> str:
    """The plan as a text table (one line per `Row`: jobs, GPUs, hours per job, estimated A100 GPU
    hours, requested runtime hours, source), the totals, then advice and notes."""
    lines = [f"{'rule':22s} {'jobs':>5s} {'GPUs':>5s} {'h/job':>9s} {'GPU·h':>10s} {'request h':>10s}  source"]
    for r in rows:
        hours = f"{r.hours:9.3g}" if r.hours is not None else f"{'≤' + format(r.runtime_h, '.1f'):>9s}"
        lines.append(f"{r.rule:22s} {r.jobs:5d} {r.gpus:5d} {hours} {r.gpu_hours:10.1f} {r.runtime_h:10.1f}  {r.source}")
    lines.append(f"total: {sum(r.jobs for r in rows)} jobs, {sum(r.gpu_hours for r in rows):,.0f} estimated GPU hours "
                 f"(A100), {sum(r.requested_gpu_hours for r in rows):,.0f} GPU hours requested (jobs × GPUs × runtime)")
    return "\n".join(lines + [f"- {a}" for a in advice] + [f"note: {n}" for n in notes]) + "\n"


def external_sample_count(source, base_dir: Path = Path(".")) -> int:
    """How many images an external generator's samples hold (0 when they cannot be counted here)."""
    try:
        from medmem.audit.scan import scan

        found = scan(base_dir / source)
        array = getattr(found, "array", None)
        return len(array) if array is not None else sum(item.kind == "picture" for item in found.items)
    except Exception:  # a plan never stops on data it cannot see; the import job reports it
        return 0


def run_plan(configfile, results="results", images=(), figures=()) -> str:
    """`medmem plan`: the plan of the config file `configfile` (dataset paths need not exist here).

    `images`: 'DATASET=TRAIN,HOLDOUT' image counts; `figures`: 'NAME=VALUE' throughput figures. Raises
    InputError for malformed items or an invalid config.
    """
    from medmem import params
    from medmem.config import load_config

    config = load_config(configfile, params.SCHEMA_PATH, check_paths=False)
    counts = _key_values(images, "--images", lambda v: tuple(int(x) for x in v.split(",", 1)) if "," in v
                         else int("x"))
    return plan_config(config, Path("."), Path(results), counts, _key_values(figures, "--figure", float))


def _key_values(items, option, convert) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key] = convert(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"{option} {item!r}: expected NAME=VALUE")
    return out


def plan_config(config: dict, base_dir: Path = Path("."), results: Path = Path("results"),
                images: dict | None = None, figures: dict | None = None) -> str:
    """`medmem plan`: the formatted plan of a validated config, with where each dataset size comes from.

    images: {dataset: (train, holdout)} image counts that override the config's; figures: per-figure
    measured speeds (see `FIGURES`). Raises InputError for an unknown figure name (and, through
    `dataset_images`, for unreadable dataset files).
    """
    counts, notes = {}, []
    for name, d in config["datasets"].items():
        train, holdout, source = (subset_images(name, config["datasets"], base_dir, results, images)
                                  if "subset_of" in d else dataset_images(name, d, base_dir, results, images))
        counts[name] = (train, holdout)
        notes.append(f"{name}: {train:,} training / {holdout:,} held-out images ({source})")
    unknown = set(figures or {}) - set(FIGURES)
    if unknown:
        raise InputError(f"--figure {sorted(unknown)[0]}: unknown (known: {', '.join(FIGURES)})")
    rows, advice = make_plan(config, counts, figures, base_dir=base_dir)
    return format_plan(rows, advice, notes)
