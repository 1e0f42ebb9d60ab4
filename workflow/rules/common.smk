import copy
import re
import shlex
import sys
from pathlib import Path

# medmem from this checkout, for Snakemake itself and, through workflow/bin/medmem, for every job
# (also inside per-rule conda envs, which hold the third-party packages only).
sys.path.insert(0, str(Path(workflow.basedir, "src").resolve()))
# The jobs run with the Python that runs Snakemake (MEDMEM_PYTHON, read by workflow/bin/medmem), so an
# absolute-path `.venv/bin/snakemake` works without an activated venv; under --sdm conda (or
# apptainer) the rule's environment provides `python` instead.
JOB_PYTHON = (
    ""
    if {m.name.lower() for m in workflow.deployment_settings.deployment_method}
    & {"conda", "apptainer"}
    else sys.executable
)
shell.prefix(
    f'export PATH={shlex.quote(str(Path(workflow.basedir, "workflow", "bin").resolve()))}:"$PATH" '
    f"MEDMEM_PYTHON={shlex.quote(JOB_PYTHON)}; "
)

from medmem.config import validate_config
from medmem.errors import InputError

if workflow.overwrite_configfiles:
    # a --configfile replaces the embedded default instead of being merged into it
    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))

try:
    validate_config(
        config,
        Path(workflow.current_basedir) / "../schemas/config.schema.yaml",
        configfiles=workflow.overwrite_configfiles,
        default=Path(workflow.basedir, "config", "config.yaml"),
    )
except InputError as exc:
    raise WorkflowError(str(exc)) from None

DATASETS = config["datasets"]


def datasets_of(kind, phantom=None):
    return [
        name
        for name, d in DATASETS.items()
        if d["kind"] == kind
        and (phantom is None or (d["source"] == "phantom") == phantom)
    ]


def one_of(names):
    """Wildcard constraint matching exactly these names (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def dataset_source(wildcards):
    source = DATASETS[wildcards.dataset]["source"]
    return f"results/phantoms/{wildcards.dataset}" if source == "phantom" else source


def subject_order_input(wildcards):
    order = DATASETS[wildcards.dataset]["split"].get("subject_order")
    return [order] if order else []


def brats_split_args(wildcards):
    split = DATASETS[wildcards.dataset]["split"]
    if "subject_order" in split:
        return f"--subject-order {split['subject_order']}"
    return f"--train {split['train']} --holdout {split.get('holdout', 0)} --seed {split['seed']}"


def cxr_split_args(wildcards):
    split = DATASETS[wildcards.dataset]["split"]
    image_level = " --image-level-split" if split.get("image_level") else ""
    return f"--holdout-fraction {split.get('holdout_fraction', 0.1)} --seed {split['seed']}{image_level}"


def holdout_source_input(wildcards):
    holdout = DATASETS[wildcards.dataset].get("holdout_source")
    return [holdout] if holdout else []


def images_split_args(wildcards):
    d = DATASETS[wildcards.dataset]
    split = d["split"]
    if d.get("holdout_source"):
        args = f"--holdout {d['holdout_source']}"
    else:
        args = f"--holdout-fraction {split.get('holdout_fraction', 0.0)} --seed {split['seed']}"
    if d.get("channels"):
        args += " --channels " + " ".join(d["channels"])
    return args


def phantom_args(wildcards):
    d = DATASETS[wildcards.dataset]
    p = d["phantom"]
    common = f"--subjects {p['subjects']} --seed {p['seed']}"
    if d["kind"] == "brats":
        return f"{common} --shape {' '.join(map(str, p['shape']))} --release {p['release']}"
    return f"{common} --height {p['height']}"


def skip_bad_flag(wildcards):
    return "--skip-bad" if config["on_bad_input"] == "skip" else ""


MEMORIZATION = config["memorization"]
MODELS = config["models"]
QUALITY = config["quality"]
QUERY_SETS = ["holdout", "planted"]


def prepared(dataset):
    return f"results/data/{dataset}/train.npy"


def query_images(wildcards):
    if wildcards.queries == "holdout":
        return f"results/data/{wildcards.dataset}/holdout.npy"
    if wildcards.queries == "planted":
        return f"results/memorization/{wildcards.dataset}/planted.npy"
    return sample_files(wildcards.dataset, wildcards.queries)


def shard_tables(wildcards):
    n = MEMORIZATION["shards"]
    return [
        f"results/memorization/{wildcards.dataset}/shards/{wildcards.queries}.{i}-of-{n}.parquet"
        for i in range(n)
    ]


SHARDED = MEMORIZATION["shards"] > 1  # one shard: the search writes its table directly


def shard_path(pattern):
    """Shard-specific path of a memorization search's output, log or benchmark."""
    return pattern.format(shard=".{shard}" if SHARDED else "")


def shard_arg(wildcards):
    return wildcards.shard if SHARDED else "0-of-1"


def memorization_args(wildcards):
    m = MEMORIZATION
    precision = "" if m["precision"] == "auto" else f"--precision {m['precision']}"
    views = (
        f"--shift {m['shift']}"
        + " --flip" * m["flip"]
        + " --foreground" * m["foreground"]
    )
    return (
        f"--top-k {m['top_k']} --device {m['device']} {precision} "
        f"--block-train {m['block_train']} --cache-gb {m['cache_gb']} {views}"
    )


TRAIN_KEYS = {
    "stylegan2": [
        "kimg",
        "batch",
        "seed",
        "r1_gamma",
        "channel_base",
        "channel_max",
        "mapping_layers",
        "z_dim",
        "translate",
    ],
    "diffusion": [
        "kimg",
        "batch",
        "seed",
        "lr",
        "ema",
        "base",
        "layers",
        "heads",
        "dropout",
        "timesteps",
        "snapshot_steps",
    ],
}


def _option(key, value):
    """`--key value` (lists as several values, booleans as flags, nulls left out)."""
    flag = f"--{key.replace('_', '-')}"
    if value is None or value is False:
        return ""
    if value is True:
        return flag
    if isinstance(value, list):
        return " ".join([flag, *map(str, value)])
    return f"{flag} {value}"


def train_args(model):
    if model not in MODELS:  # not configured: its rules never run
        return ""
    m = MODELS[model]
    keys = TRAIN_KEYS[model] + [
        "checkpoint_kimg",
        "snapshot_kimg",
        "log_kimg",
        "precision",
    ]
    if model == "stylegan2":
        keys += ["flip", "ema_rampup"]
    else:
        keys += ["ema_warmup", "mults", "attention", "beta_start", "beta_end"]
    options = [_option(k, m[k]) for k in keys]
    if model == "diffusion" and not m["attention"]:
        options.append("--attention")  # an empty list: no attention
    if model == "stylegan2" and m["ema_rampup"] is None:
        options.append("--no-ema-rampup")
    return " ".join(o for o in options + ["--no-progress"] if o)


def sample_args(model):
    if model not in MODELS:
        return ""
    m = MODELS[model]
    keys = ["samples", "sample_seed", "sample_batch", "sample_precision"]
    if model == "stylegan2":
        keys += ["truncation", "noise_mode"]
    else:
        keys += ["sampler", "steps"]
    names = {
        "samples": "n",
        "sample_seed": "seed",
        "sample_batch": "batch",
        "sample_precision": "precision",
    }
    return " ".join(o for o in (_option(names.get(k, k), m[k]) for k in keys) if o)


def quality_args():
    q = QUALITY
    args = f"--inception {q['inception']} --device {q['device']} --batch {q['batch']}"
    if q["inception_weights"]:
        args += f" --weights {q['inception_weights']}"
    return args


def rule_resources(rule):
    """The rule's scheduler request from config `resources` (gpu and gres only when set)."""
    r = config["resources"][rule]
    out = {"runtime": r["runtime"], "mem_mb": r["mem_mb"], "gpu": r["gpu"]}
    if r["gres"]:
        out["gres"] = r["gres"]
        del out["gpu"]
    if r["gpu_model"]:
        out["gpu_model"] = r["gpu_model"]
    return out


def rule_threads(rule):
    return config["resources"][rule]["threads"]


def gpus(rule):
    """`--gpus N` for medmem: the GPUs it may claim on a machine without a scheduler."""
    r = config["resources"][rule]
    n = r["gpu"] or int(str(r["gres"] or "gpu:0").split(":")[-1])
    return f"--gpus {n}"


def final_outputs():
    outputs = [prepared(name) for name in DATASETS]
    outputs += [f"results/memorization/{name}/calibration.csv" for name in DATASETS]
    outputs += [
        f"results/memorization/{d}/{m}.parquet" for d in DATASETS for m in MODELS
    ]
    outputs += ["results/report/summary.csv"]
    return outputs


def report_rows():
    return [f"results/report/{d}/{m}/row.json" for d in DATASETS for m in MODELS]


def dataset_kind(wildcards):
    return DATASETS[wildcards.dataset]["kind"]


def dataset_size(wildcards):
    return DATASETS[wildcards.dataset]["size"]


DETECTOR = MEMORIZATION["detector"]


def detector_tables(queries):
    """The detector's tables of the held-out and planted images (none when it is off)."""

    def tables(wildcards):
        if not DETECTOR["enabled"]:
            return []
        return [
            f"results/detector/{wildcards.dataset}/{q.format(**wildcards)}.parquet"
            for q in queries
        ]

    return tables


def calibrate_args(wildcards):
    d = f"results/detector/{wildcards.dataset}"
    extra = (
        f"--extra-holdout {d}/holdout.parquet --extra-planted {d}/planted.parquet"
        if DETECTOR["enabled"]
        else ""
    )
    return f"{extra} --combine {' '.join(MEMORIZATION['combine'])}"


def detector_train_args(wildcards):
    keys = ["steps", "batch", "lr", "temperature", "width", "dim", "seed"]
    return " ".join(_option(k, DETECTOR[k]) for k in keys)


# --- training in segments (models.<model>.segment_kimg): a chain of jobs, each within its runtime ---


def _kimg_text(value):
    return f"{round(value, 6):.6f}".rstrip("0").rstrip(".")


def segment_ends(model):
    """kimg at which each segment but the last ends (none with segment_kimg null)."""
    m = MODELS.get(model)
    if not m or not m["segment_kimg"]:
        return []
    ends, k = [], 1
    while round(k * m["segment_kimg"], 6) < m["kimg"]:
        ends.append(_kimg_text(k * m["segment_kimg"]))
        k += 1
    return ends


def segment_checkpoint(dataset, model, kimg):
    return f"results/train/{dataset}/{model}/segments/{kimg}kimg.pt"


def previous_segment(model):
    """Input function: the checkpoint the segment (or the final training job) continues from."""

    def previous(wildcards):
        ends = segment_ends(model)
        position = (
            ends.index(wildcards.kimg) if "kimg" in wildcards.keys() else len(ends)
        )
        if position == 0:
            return []
        return [segment_checkpoint(wildcards.dataset, model, ends[position - 1])]

    return previous


def resume_arg(model):
    """`--resume CHECKPOINT` when a previous segment exists."""

    def arg(wildcards):
        previous = previous_segment(model)(wildcards)
        return f"--resume {previous[0]}" if previous else ""

    return arg


# --- sampling in shards (models.<model>.sample_shards): one job per contiguous range of images ---


def sample_shards(model):
    return MODELS[model]["sample_shards"] if model in MODELS else 1


def sample_path(model, suffix):
    """A sample rule's output: the model's one file, or one shard's (wildcard shard = i-of-n)."""
    if sample_shards(model) > 1:
        return f"results/samples/{{dataset}}/{model}.{{shard}}{suffix}"
    return f"results/samples/{{dataset}}/{model}{suffix}"


def sample_record(model, folder, suffix):
    """A sample rule's log or benchmark: FOLDER/{dataset}.MODEL[.{shard}]SUFFIX."""
    shard = ".{shard}" if sample_shards(model) > 1 else ""
    return f"{folder}/{{dataset}}.{model}{shard}{suffix}"


def sample_files(dataset, model):
    """Every sample file of one model, in order of their images."""
    n = sample_shards(model)
    if n == 1:
        return [f"results/samples/{dataset}/{model}.npy"]
    return [f"results/samples/{dataset}/{model}.{i}-of-{n}.npy" for i in range(n)]


def model_samples(wildcards):
    return sample_files(wildcards.dataset, wildcards.model)


def shard_option(wildcards):
    return f"--shard {wildcards.shard}" if "shard" in wildcards.keys() else ""
