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

from medmem import params
from medmem.config import validate_config
from medmem.errors import InputError
from medmem.io import kept_network_name, kimg_text as _kimg_text

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
        and "subset_of" not in d  # made by prepare_subset
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
    return f"--holdout-fraction {split['holdout_fraction']} --seed {split['seed']}{image_level}"


def holdout_source_input(wildcards):
    holdout = DATASETS[wildcards.dataset].get("holdout_source")
    return [holdout] if holdout else []


def images_split_args(wildcards):
    d = DATASETS[wildcards.dataset]
    split = d["split"]
    if d.get("holdout_source"):
        args = f"--holdout {d['holdout_source']}"
    else:
        args = f"--holdout-fraction {split['holdout_fraction']} --seed {split['seed']}"
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
MODELS = config[
    "models"
]  # named generators: {name: {type: stylegan2 | diffusion | external, ...}}
QUALITY = config["quality"]
DETECTOR = MEMORIZATION["detector"]


# --- the options of a medmem command, made from a config block through the schema (medmem.params) ---


def options(path, values, command):
    """`values` (the config block at schema `path`) as the shell-quoted options of `medmem command`."""
    return shlex.join(params.command_args(params.node(path), values, command))


def model_options(command):
    """Input function: the generator's config block as the options of `medmem train` or `sample`."""

    def args(wildcards):
        m = MODELS[wildcards.model]
        return options(f"$defs.{m['type']}", m, command)

    return args


def memorization_options(command):
    return options("memorization", MEMORIZATION, command)


# --- the generators: named instances of a type ---


def models_of(*types):
    return [name for name, m in MODELS.items() if m["type"] in types]


def model_datasets(model):
    """The datasets a generator is audited on: its `datasets` (default all, in config order), or an
    external one's datasets with samples."""
    m = MODELS[model]
    if m["type"] == "external":
        return list(m["samples"])
    return [d for d in DATASETS if d in m.get("datasets", DATASETS)]


def trained_models(*types, keeping=None):
    """Generators of these types that train a network (not those that sample another's: `network`);
    keeping True/False: only those with / without keep_kimg."""
    return [
        name
        for name in models_of(*types)
        if not MODELS[name].get("network")
        and (keeping is None or bool(MODELS[name].get("keep_kimg")) == keeping)
    ]


def keep_rule_name(model):
    """The name of the training job of a generator with keep_kimg, train_<type>_<name>_kept (an identifier;
    no other rule ends in _kept)."""
    return re.sub(r"\W", "_", f"train_{MODELS[model]['type']}_{model}_kept")


def kept_networks(model):
    """The networks a generator keeps along training (keep_kimg), as output patterns."""
    return [
        f"results/train/{{dataset}}/{{model}}/{kept_network_name(k)}"
        for k in MODELS[model].get("keep_kimg", [])
    ]


def network_source(model):
    """The generator whose training run a generator samples: its `network.model`, or itself."""
    network = MODELS[model].get("network")
    return network["model"] if network else model


def network_file(wildcards):
    """Input function: the network a generator samples: its own network.pt, or (key `network`) another
    entry's network.pt or kept network-<kimg>kimg.pt."""
    run = f"results/train/{wildcards.dataset}/{network_source(wildcards.model)}"
    kimg = (MODELS[wildcards.model].get("network") or {}).get("kimg")
    return f"{run}/network.pt" if kimg is None else f"{run}/{kept_network_name(kimg)}"


def audited():
    """Every (dataset, generator) pair the workflow audits, in config order."""
    return [(d, m) for d in DATASETS for m in MODELS if d in model_datasets(m)]


def label_option(wildcards):
    """`--label NAME` when the generator has a label (the report names it by its name otherwise)."""
    label = MODELS[wildcards.model].get("label")
    return shlex.join(["--label", label]) if label else ""


TYPE_TITLES = {
    "stylegan2": "StyleGAN2",
    "diffusion": "Diffusion",
    "external": "Trained elsewhere",
}


def report_group(wildcards):
    """The HTML report's subcategory of a generator's figures: its type, then its name (grouped by type)."""
    return f"{TYPE_TITLES[MODELS[wildcards.model]['type']]}: {wildcards.model}"


def model_type(wildcards):
    return MODELS[wildcards.model]["type"]


# --- dataset files ---


def data_file(name):
    """A prepared dataset's file (train.npy, holdout.npy, slices.csv, dataset.json) as a rule's input."""
    return f"results/data/{{dataset}}/{name}"


def prepared_folder(wildcards, output):
    """The folder `medmem prepare` writes a dataset's files into: that of the rule's train.npy."""
    return str(Path(output.train).parent)


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
    outputs += [f"results/memorization/{d}/{m}.parquet" for d, m in audited()]
    outputs += ["results/report/summary.csv"]
    outputs += [
        f"results/report/experiments/{folder}/figure.png" for folder in EXPERIMENTS
    ]
    return outputs


def report_rows():
    return [f"results/report/{d}/{m}/row.json" for d, m in audited()]


def dataset_kind(wildcards):
    return DATASETS[wildcards.dataset]["kind"]


def dataset_size(wildcards):
    return DATASETS[wildcards.dataset]["size"]


def detector_tables(queries):
    """The detector's tables of the held-out and planted images (none when it is off)."""
    return detector_files(
        *(f"results/detector/{{dataset}}/{q}.parquet" for q in queries)
    )


def detector_files(*files):
    """Input function: `files` (patterns with {dataset}) when the copy detector is on, else none."""

    def found(wildcards):
        if not DETECTOR["enabled"]:
            return []
        return [f.format(**wildcards) for f in files]

    return found


def training_curve(wildcards):
    """The generator's log.csv (that of the entry whose network it samples; none for an external
    generator: trained elsewhere)."""
    if MODELS[wildcards.model]["type"] == "external":
        return []
    return [
        f"results/train/{wildcards.dataset}/{network_source(wildcards.model)}/log.csv"
    ]


def optional(flag, files):
    """Input function for params: `flag FILE...` when the input `files` (a list) is not empty."""

    def arg(wildcards, input):
        given = list(getattr(input, files))
        return shlex.join([flag, *given]) if given else ""

    return arg


# --- training in segments (segment_kimg): a chain of jobs, each within its runtime ---


def segment_ends(model):
    """kimg at which each segment but the last ends (none with segment_kimg null)."""
    m = MODELS.get(model)
    if not m or not m.get("segment_kimg"):
        return []
    ends, k = [], 1
    while round(k * m["segment_kimg"], 6) < m["kimg"]:
        ends.append(_kimg_text(k * m["segment_kimg"]))
        k += 1
    return ends


def train_run(wildcards):
    """The training run's folder (checkpoint.pt, network.pt, log.csv, snapshots/, segments/)."""
    return f"results/train/{wildcards.dataset}/{wildcards.model}"


def segment_checkpoint(dataset, model, kimg):
    return f"results/train/{dataset}/{model}/segments/{kimg}kimg.pt"


def previous_segment(wildcards):
    """Input function: the checkpoint the segment (or the final training job) continues from."""
    ends = segment_ends(wildcards.model)
    position = ends.index(wildcards.kimg) if "kimg" in wildcards.keys() else len(ends)
    if position == 0:
        return []
    return [segment_checkpoint(wildcards.dataset, wildcards.model, ends[position - 1])]


def resume_arg(wildcards):
    """`--resume CHECKPOINT` when a previous segment exists."""
    previous = previous_segment(wildcards)
    return f"--resume {previous[0]}" if previous else ""


# --- sampling in shards (sample_shards): one job per contiguous range of images ---


def sample_shards(model):
    return MODELS[model].get("sample_shards", 1)


def sample_files(dataset, model):
    """Every sample file of one generator, in order of their images."""
    n = sample_shards(model)
    if n == 1:
        return [f"results/samples/{dataset}/{model}.npy"]
    return [f"results/samples/{dataset}/{model}.{i}-of-{n}.npy" for i in range(n)]


def model_samples(wildcards):
    return sample_files(wildcards.dataset, wildcards.model)


def shard_option(wildcards):
    """`--shard i-of-n` for a sharded generator's job (wildcard shard: '' or '.i-of-n')."""
    return f"--shard {wildcards.shard[1:]}" if wildcards.shard else ""


def external_samples(wildcards):
    return MODELS[wildcards.model]["samples"][wildcards.dataset]


# --- datasets made from another's prepared files (subset_of): the dataset-size experiment ---


def subset_datasets():
    return [name for name, d in DATASETS.items() if "subset_of" in d]


def subset_parent_file(name):
    """Input function: the parent dataset's prepared file `name` (train.npy, holdout.npy, ...)."""

    def path(wildcards):
        parent = DATASETS[wildcards.dataset]["subset_of"]["dataset"]
        return f"results/data/{parent}/{name}"

    return path


def subset_args(wildcards):
    s = DATASETS[wildcards.dataset]["subset_of"]
    return shlex.join(
        ["--train-subjects", str(s["train_subjects"]), "--parent", s["dataset"]]
    )


# --- experiments: generators tagged `experiment: {name, x, axis}`, one report per name ---


def _experiments():
    """{folder: {name, axis, points: [(dataset, model, x)]}}: the tagged generators on each of their
    datasets, in config order; folder is the name as a slug (medmem.config.slug)."""
    from medmem.config import slug

    out = {}
    for model, m in MODELS.items():
        tag = m.get("experiment")
        if tag:
            entry = out.setdefault(
                slug(tag["name"]),
                {"name": tag["name"], "axis": tag.get("axis", ""), "points": []},
            )
            entry["points"] += [(d, model, tag["x"]) for d in model_datasets(model)]
    return out


EXPERIMENTS = _experiments()


def experiment_rows(wildcards):
    """Input function: the summary rows of an experiment's generators, one per dataset × generator."""
    return [
        f"results/report/{d}/{m}/row.json"
        for d, m, _ in EXPERIMENTS[wildcards.experiment]["points"]
    ]


def experiment_param(key):
    """Params function: the experiment's name, axis label, x values (one per row) or points (texts)."""

    def value(wildcards):
        e = EXPERIMENTS[wildcards.experiment]
        if key == "x":
            return [str(x) for _, _, x in e["points"]]
        if key == "points":
            return [f"{m} on {d} at {x}" for d, m, x in e["points"]]
        return e[key]

    return value


def experiment_title(wildcards):
    """The HTML report's subcategory of an experiment: its name."""
    return EXPERIMENTS[wildcards.experiment]["name"]
