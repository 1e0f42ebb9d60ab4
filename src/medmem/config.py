"""Workflow configuration: schema validation with defaults, then the checks a schema cannot express.

Every error names the config key, e.g. `config key 'datasets.brats20.size': 'abc' is not of type 'integer'`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import jsonschema
import yaml

from medmem.errors import InputError
from medmem.io import kimg_text as _kimg_text


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_defaults})


def _copy(value):
    return yaml.safe_load(yaml.safe_dump(value))


def _key(path) -> str:
    return ".".join(str(p) for p in path)


def validate_config(config: dict, schema_path, base_dir=".", configfiles=None, default=None,
                    check_paths: bool = True) -> dict:
    """Validate `config` in place against the schema (filling defaults) and return it.

    `configfiles`: the `--configfile` files that replaced the embedded default (`default`, its
    path); a required key they lack is then reported as what those files lack, naming them.
    `check_paths=False` skips the dataset folders' existence check (`medmem plan` plans a config whose
    data is not on this machine).
    Raises InputError (one line naming the key) for the first problem.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    given = _copy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), _key(e.absolute_path)))
    missing = [_key([*e.absolute_path, e.message.split("'")[1]]) for e in errors
               if e.validator == "required" and e.message.count("'") >= 2]
    if configfiles and missing:
        files = ", ".join(str(f) for f in configfiles)
        others = sorted(set(yaml.safe_load(Path(default).read_text()) or {}) - set(given) - set(missing)) \
            if default and Path(default).is_file() else []
        also = f"; the schema's defaults replace the embedded {', '.join(others)}" if others else ""
        raise InputError(f"--configfile {files} replaces the embedded default {default or 'config'} (it is not "
                         f"merged into it, whatever Snakemake says about 'extended'): {files} lacks the required "
                         f"key{'s' if len(missing) > 1 else ''} {', '.join(missing)}{also}")
    if errors:
        error = errors[0]
        where = f"config key '{_key(error.absolute_path)}'" if error.absolute_path else "config"
        raise InputError(f"{where}: {error.message}")
    _fill_seeds(config)
    _check_datasets(config, Path(base_dir), check_paths)
    _check_subsets(config, given, Path(base_dir))
    _check_resources(config)
    _check_sample_shards(config)
    _check_diffusion_schedules(config)
    _check_external(config, Path(base_dir), check_paths)
    _check_model_datasets(config)
    _check_keep_kimg(config)
    _check_networks(config, given)
    _check_experiments(config)
    return config


# results/memorization/DATASET/<name>.parquet and its neighbours: a generator may not take these names
RESERVED_NAMES = {"holdout": "held-out images' search", "planted": "planted copies' search",
                  "train_features": "training images' Inception features", "detector": "copy detector"}


def _fill_seeds(config: dict) -> None:
    """Seeds not given take the top-level `seed` (the schema marks them `x-default-from: seed`)."""
    seed = config["seed"]
    blocks = [(m, ("seed", "sample_seed")) for m in config["models"].values() if m["type"] != "external"]
    blocks += [(config["memorization"]["planted"], ("seed",)), (config["memorization"]["detector"], ("seed",))]
    blocks += [(d["split"], ("seed",)) for d in config["datasets"].values() if "split" in d]
    for block, names in blocks:
        for name in names:
            block.setdefault(name, seed)


def _check_external(config: dict, base_dir: Path, check_paths: bool) -> None:
    """Generator names that are not a query set's; an external generator's samples name datasets and exist."""
    for name, model in config["models"].items():
        if name in RESERVED_NAMES:
            raise InputError(f"config key 'models.{name}': '{name}' names the {RESERVED_NAMES[name]}; "
                             "give the generator another name")
        if model["type"] != "external":
            continue
        for dataset, path in model["samples"].items():
            key = f"config key 'models.{name}.samples.{dataset}'"
            if dataset not in config["datasets"]:
                raise InputError(f"{key}: no dataset '{dataset}' in datasets ({', '.join(config['datasets'])})")
            made_here = Path(path).parts[:1] == ("results",)  # e.g. another generator's samples, made by a rule
            if check_paths and not made_here and not (base_dir / path).exists():
                raise InputError(f"{key}: '{path}' does not exist")


def _check_model_datasets(config: dict) -> None:
    """A generator's `datasets` name datasets of the config."""
    for name, model in config["models"].items():
        for dataset in model.get("datasets", []):
            if dataset not in config["datasets"]:
                raise InputError(f"config key 'models.{name}.datasets': no dataset '{dataset}' in datasets "
                                 f"({', '.join(config['datasets'])})")


def slug(name: str) -> str:
    """The experiment's folder name: lower case, runs of anything but letters and digits as '-'
    ('Training length' → 'training-length'). Raises ValueError when nothing is left."""
    out = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not out:
        raise ValueError(f"experiment name {name!r} has no letter or digit")
    return out


def _check_experiments(config: dict) -> None:
    """Experiment names with a letter or digit, one name per folder (slug), one axis label per experiment."""
    names: dict[str, str] = {}
    axes: dict[str, str] = {}
    for model, m in config["models"].items():
        experiment = m.get("experiment")
        if experiment is None:
            continue
        key = f"config key 'models.{model}.experiment"
        try:
            folder = slug(experiment["name"])
        except ValueError as exc:
            raise InputError(f"{key}.name': {exc}") from None
        if names.setdefault(folder, experiment["name"]) != experiment["name"]:
            raise InputError(f"{key}.name': '{experiment['name']}' and '{names[folder]}' share the folder "
                             f"'{folder}'; name them apart")
        axis = experiment.get("axis", "")
        if axes.setdefault(experiment["name"], axis) != axis:
            raise InputError(f"{key}.axis': '{axis}', but another entry of experiment '{experiment['name']}' "
                             f"has '{axes[experiment['name']]}'; give the same axis label")


def _check_keep_kimg(config: dict) -> None:
    """Kept networks within the training length, each a distinct file name."""
    for name, model in config["models"].items():
        kept = model.get("keep_kimg", [])
        for k in kept:
            if round(k * 1000) > round(model["kimg"] * 1000):
                raise InputError(f"config key 'models.{name}.keep_kimg': {k:g} is beyond its kimg {model['kimg']:g}")
        texts = [_kimg_text(k) for k in kept]
        if len(set(texts)) < len(texts):
            raise InputError(f"config key 'models.{name}.keep_kimg': {', '.join(texts)} names a file twice")


def _check_networks(config: dict, given: dict) -> None:
    """An entry with `network` samples a trained entry of its type (its kept network at `kimg`, one of
    that entry's keep_kimg), on datasets that entry trains on, and sets no training key itself."""
    from medmem import params

    models = config["models"]
    for name, model in models.items():
        network = model.get("network")
        if network is None:
            continue
        key = f"config key 'models.{name}.network"
        source = network["model"]
        if source not in models:
            raise InputError(f"{key}.model': no generator '{source}' in models ({', '.join(models)})")
        other = models[source]
        if source == name or other.get("network"):
            raise InputError(f"{key}.model': '{source}' trains no network (it has `network` itself); "
                             "name the entry that trains it")
        if other["type"] != model["type"]:
            raise InputError(f"{key}.model': '{source}' is a {other['type']} generator, '{name}' a "
                             f"{model['type']} one; a network is sampled by an entry of its own type")
        kept = [_kimg_text(k) for k in other.get("keep_kimg", [])]
        if network["kimg"] is not None and _kimg_text(network["kimg"]) not in kept:
            raise InputError(f"{key}.kimg': '{source}' keeps no network at {_kimg_text(network['kimg'])} kimg "
                             f"(its keep_kimg: {', '.join(kept) or 'none'}); add it there, or null for the final one")
        mine = model.get("datasets", list(config["datasets"]))
        theirs = other.get("datasets", list(config["datasets"]))
        missing = [d for d in mine if d not in theirs]
        if missing:
            raise InputError(f"config key 'models.{name}.datasets': '{source}' (whose network it samples) is not "
                             f"trained on {', '.join(missing)}; give datasets within {', '.join(theirs)}")
        training = params.keys(params.node(f"$defs.{model['type']}"), "train") + ["segment_kimg"]
        set_here = [k for k in training if k in given["models"][name]]
        if set_here:
            raise InputError(f"config key 'models.{name}.{set_here[0]}': '{name}' trains nothing (it samples "
                             f"'{source}''s network); set training keys on '{source}'")


def _check_sample_shards(config: dict) -> None:
    """Sample shards are whole batches (the same bytes whatever the shard count): enough batches for all."""
    for model, m in config.get("models", {}).items():
        if m["type"] == "external":
            continue
        batches = -(-m["samples"] // m["sample_batch"])
        if m["sample_shards"] > batches:
            raise InputError(f"config key 'models.{model}.sample_shards': {m['sample_shards']} shards, but "
                             f"{m['samples']} samples make only {batches} batches of sample_batch "
                             f"{m['sample_batch']}; lower sample_batch or sample_shards")


def _check_diffusion_schedules(config: dict) -> None:
    """Zero terminal SNR needs v-prediction (at ᾱ_T = 0 no x0 follows from ε; Lin et al. 2024)."""
    for model, m in config.get("models", {}).items():
        if m["type"] == "diffusion" and m.get("zero_terminal_snr") and m.get("prediction") == "epsilon":
            raise InputError(f"config key 'models.{model}.zero_terminal_snr': needs prediction: v (at zero "
                             "terminal SNR no x0 follows from a predicted ε)")


def _check_resources(config: dict) -> None:
    for rule, r in config.get("resources", {}).items():
        if r.get("gpu") and r.get("gres"):
            raise InputError(f"config key 'resources.{rule}': give gpu or gres, not both (SLURM refuses both)")


def _check_datasets(config: dict, base_dir: Path, check_paths: bool = True) -> None:
    for name, dataset in config["datasets"].items():
        if "subset_of" in dataset:  # checked by _check_subsets
            continue
        key = f"datasets.{name}"
        source = dataset["source"]
        if dataset["kind"] == "images":
            _check_images_dataset(dataset, key, base_dir, check_paths)
            continue
        for extra in ("holdout_source", "channels"):
            if extra in dataset:
                raise InputError(f"config key '{key}.{extra}': only for kind images")
        if check_paths and source != "phantom" and not (base_dir / source).is_dir():
            raise InputError(f"config key '{key}.source': dataset folder '{source}' does not exist "
                             "(give the path to the dataset, or 'phantom')")
        split = dataset["split"]
        if dataset["kind"] == "brats":
            by_order, by_count = "subject_order" in split, "train" in split
            if by_order == by_count:
                raise InputError(f"config key '{key}.split': give either subject_order or train and holdout")
            if by_order and not (base_dir / split["subject_order"]).is_file():
                raise InputError(f"config key '{key}.split.subject_order': file "
                                 f"'{split['subject_order']}' does not exist")
            if by_count and split.get("holdout", 0) < 1:
                raise InputError(f"config key '{key}.split.holdout': at least 1 held-out subject is needed "
                                 "(the calibration searches the held-out images)")
            for cxr_key in ("holdout_fraction", "image_level"):
                if cxr_key in split:
                    raise InputError(f"config key '{key}.split.{cxr_key}': only for kind cxr")
        else:
            if split.get("holdout_fraction", 0.1) <= 0:
                raise InputError(f"config key '{key}.split.holdout_fraction': must be above 0 "
                                 "(the calibration searches the held-out images)")
            unexpected = sorted(set(split) - {"holdout_fraction", "seed", "image_level"})
            if unexpected:
                raise InputError(f"config key '{key}.split.{unexpected[0]}': not used for kind cxr "
                                 "(the split is by patient: holdout_fraction, seed, image_level)")


def _check_images_dataset(dataset: dict, key: str, base_dir: Path, check_paths: bool) -> None:
    """kind images: source (and holdout_source) exist as a folder or file; held out one way only."""
    if dataset["source"] == "phantom":
        raise InputError(f"config key '{key}.source': kind images has no phantom; give a folder or file")
    for name in ("source", "holdout_source"):
        path = dataset.get(name)
        if check_paths and path is not None and not (base_dir / path).exists():
            raise InputError(f"config key '{key}.{name}': '{path}' does not exist")
    split = dataset["split"]
    unexpected = sorted(set(split) - {"holdout_fraction", "seed"})
    if unexpected:
        raise InputError(f"config key '{key}.split.{unexpected[0]}': not used for kind images "
                         "(holdout_source, or split.holdout_fraction and seed)")
    if "holdout_source" in dataset and split.get("holdout_fraction"):
        raise InputError(f"config key '{key}.split.holdout_fraction': give holdout_source or a holdout fraction, "
                         "not both")
    if "holdout_source" not in dataset and not split.get("holdout_fraction"):
        raise InputError(f"config key '{key}.holdout_source': kind images needs held-out images (holdout_source, "
                         "or split.holdout_fraction above 0): the calibration searches them")


# keys of a dataset that a subset (subset_of) does not take: it is made from its parent's prepared files
SUBSET_UNUSED = ("source", "split", "phantom", "holdout_source", "channels")


def _check_subsets(config: dict, given: dict, base_dir: Path) -> None:
    """Datasets with `subset_of`: the parent exists and the chain of parents ends in a dataset that is
    prepared from its source (no cycle); train_subjects is at most the parent's training subjects where
    the config tells them (`training_subjects`); no source, split or phantom; kind and size are the
    root parent's (given ones must equal them). Fills in kind and size, removes the split and phantom
    blocks the schema's defaults added."""
    datasets = config["datasets"]
    given_datasets = given.get("datasets", {}) if isinstance(given, dict) else {}
    for name, dataset in datasets.items():
        if "subset_of" not in dataset:
            continue
        key = f"config key 'datasets.{name}"
        chain, current = [name], name
        while "subset_of" in datasets[current]:
            parent = datasets[current]["subset_of"]["dataset"]
            if parent not in datasets:
                raise InputError(f"config key 'datasets.{current}.subset_of.dataset': no dataset '{parent}' in "
                                 f"datasets ({', '.join(datasets)})")
            if parent in chain:
                cycle = " → ".join(chain[chain.index(parent):] + [parent])
                raise InputError(f"{key}.subset_of.dataset': the datasets' subset_of form a cycle ({cycle})")
            chain.append(parent)
            current = parent
        root = datasets[current]
        mine = given_datasets.get(name, {}) if isinstance(given_datasets.get(name), dict) else {}
        for unused in SUBSET_UNUSED:
            if unused in mine:
                raise InputError(f"{key}.{unused}': not used with subset_of (the subset is made from the prepared "
                                 f"files of its parent '{dataset['subset_of']['dataset']}')")
        for inherited in ("kind", "size"):
            if inherited in mine and mine[inherited] != root[inherited]:
                raise InputError(f"{key}.{inherited}': {mine[inherited]!r}, but the {inherited} of '{current}', "
                                 f"whose prepared files it is a subset of, is {root[inherited]!r}")
            dataset[inherited] = root[inherited]
        dataset.pop("split", None)
        dataset.pop("phantom", None)
    for name, dataset in datasets.items():
        if "subset_of" not in dataset:
            continue
        parent, n = dataset["subset_of"]["dataset"], dataset["subset_of"]["train_subjects"]
        available = training_subjects(datasets[parent], base_dir)
        if available is not None and n > available:
            raise InputError(f"config key 'datasets.{name}.subset_of.train_subjects': {n} exceeds the {available} "
                             f"training subjects of '{parent}'")


def training_subjects(dataset: dict, base_dir: Path = Path(".")) -> int | None:
    """The training subjects (chest x-rays: patients) a validated config dataset will hold, where the
    config tells them: a subset's train_subjects; BraTS: split.train, or the subject order's train rows;
    phantom chest x-rays: the patients medmem.data.cxr.split_patients keeps for training. None where
    only the data tells (a dataset folder of chest x-rays or images, an unreadable order file). Subjects
    skipped as bad input (on_bad_input: skip) may make the prepared dataset smaller."""
    if "subset_of" in dataset:
        return dataset["subset_of"]["train_subjects"]
    split = dataset.get("split", {})
    if dataset["kind"] == "brats":
        if "train" in split:
            return split["train"]
        try:
            with open(base_dir / split["subject_order"], newline="") as f:
                return sum(row.get("split") == "train" for row in csv.DictReader(f))
        except (OSError, KeyError, UnicodeDecodeError, csv.Error):
            return None
    if dataset["kind"] == "cxr" and dataset.get("source") == "phantom":
        total, fraction = dataset["phantom"]["subjects"], split.get("holdout_fraction", 0.1)
        held = round(fraction * total)  # as split_patients
        if fraction > 0 and total > 1:
            held = min(max(held, 1), total - 1)
        return total - held
    return None


def load_config(path, schema_path, base_dir=".", check_paths: bool = True) -> dict:
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read config ({exc})") from None
    return validate_config(config, schema_path, base_dir, check_paths=check_paths)
