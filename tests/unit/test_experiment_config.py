"""Validation of the experiment keys of named generators: datasets, network, keep_kimg, experiment."""

import pytest
import yaml
from conftest import REPO

from medmem.config import validate_config
from medmem.errors import InputError

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def short() -> dict:
    return yaml.safe_load((REPO / "config" / "test.yaml").read_text())


def error(config) -> str:
    with pytest.raises(InputError) as err:
        validate_config(config, SCHEMA, REPO)
    return str(err.value)


def test_datasets_default_is_every_dataset_and_a_list_is_kept():
    config = short()
    config["models"]["diffusion"]["datasets"] = ["cxr"]
    validate_config(config, SCHEMA, REPO)
    assert "datasets" not in config["models"]["stylegan2"]  # no default filled: all datasets
    assert config["models"]["diffusion"]["datasets"] == ["cxr"]


@pytest.mark.parametrize("value, words", [
    (["brats20", "nope"], "config key 'models.stylegan2.datasets': no dataset 'nope' in datasets (brats20, brats21, cxr)"),
    ([], "config key 'models.stylegan2.datasets': [] should be non-empty"),
    (["cxr", "cxr"], "config key 'models.stylegan2.datasets': ['cxr', 'cxr'] has non-unique elements"),
    ("cxr", "config key 'models.stylegan2.datasets': 'cxr' is not of type 'array'"),
])
def test_bad_datasets_name_the_key(value, words):
    config = short()
    config["models"]["stylegan2"]["datasets"] = value
    assert words in error(config)


def test_external_generator_takes_its_datasets_from_its_samples():
    config = short()
    config["models"]["ext"] = {"type": "external", "samples": {"cxr": "results/x.npy"}, "datasets": ["cxr"]}
    assert "config key 'models.ext': Additional properties are not allowed ('datasets' was unexpected)" in error(config)


def with_sampler_entry(**entry) -> dict:
    config = short()
    config["models"]["ddim"] = {"type": "diffusion", "network": {"model": "diffusion"}, "sampler": "ddim",
                                "steps": 3, **entry}
    return config


def test_network_entry_is_valid_and_takes_the_final_network_by_default():
    config = validate_config(with_sampler_entry(), SCHEMA, REPO)
    assert config["models"]["ddim"]["network"] == {"model": "diffusion", "kimg": None}


@pytest.mark.parametrize("change, words", [
    (lambda m: m["ddim"]["network"].update(model="difusion"),
     "config key 'models.ddim.network.model': no generator 'difusion' in models (stylegan2, diffusion, ddim)"),
    (lambda m: m["ddim"]["network"].update(model="stylegan2"),
     "config key 'models.ddim.network.model': 'stylegan2' is a stylegan2 generator, 'ddim' a diffusion one"),
    (lambda m: m["ddim"]["network"].update(model="ddim"),
     "config key 'models.ddim.network.model': 'ddim' trains no network"),
    (lambda m: m.update(chain={"type": "diffusion", "network": {"model": "ddim"}}),
     "config key 'models.chain.network.model': 'ddim' trains no network"),
    (lambda m: m["ddim"]["network"].update(kimg=0.032),
     "config key 'models.ddim.network.kimg': 'diffusion' keeps no network at 0.032 kimg (its keep_kimg: none)"),
    (lambda m: m["ddim"]["network"].update(kimg=0),
     "config key 'models.ddim.network.kimg': 0 is less than or equal to the minimum of 0"),
    (lambda m: m["ddim"]["network"].update(epoch=3),
     "config key 'models.ddim.network': Additional properties are not allowed ('epoch' was unexpected)"),
    (lambda m: m["ddim"].update(network={"kimg": 1}),
     "config key 'models.ddim.network': 'model' is a required property"),
    (lambda m: (m["diffusion"].update(datasets=["cxr"]), m["ddim"].update(datasets=["cxr", "brats20"])),
     "config key 'models.ddim.datasets': 'diffusion' (whose network it samples) is not trained on brats20; "
     "give datasets within cxr"),
    (lambda m: m["diffusion"].update(datasets=["cxr"]),  # ddim: every dataset by default
     "config key 'models.ddim.datasets': 'diffusion' (whose network it samples) is not trained on brats20, brats21"),
    (lambda m: m["ddim"].update(kimg=10),
     "config key 'models.ddim.kimg': 'ddim' trains nothing (it samples 'diffusion''s network); set training keys "
     "on 'diffusion'"),
    (lambda m: m["ddim"].update(segment_kimg=1), "config key 'models.ddim.segment_kimg': 'ddim' trains nothing"),
])
def test_bad_network_entries_name_the_key(change, words):
    config = with_sampler_entry()
    change(config["models"])
    assert words in error(config)


def test_keep_kimg_defaults_to_none_and_a_network_entry_may_sample_a_kept_network():
    config = with_sampler_entry()
    config["models"]["diffusion"]["keep_kimg"] = [0.016, 0.032]
    config["models"]["ddim"]["network"]["kimg"] = 0.0320000001  # the same file name
    config = validate_config(config, SCHEMA, REPO)
    assert config["models"]["stylegan2"]["keep_kimg"] == []


@pytest.mark.parametrize("value, words", [
    ([0.1], "config key 'models.diffusion.keep_kimg': 0.1 is beyond its kimg 0.064"),
    ([0], "config key 'models.diffusion.keep_kimg.0': 0 is less than or equal to the minimum of 0"),
    ([0.016, 0.0160000001], "config key 'models.diffusion.keep_kimg': 0.016, 0.016 names a file twice"),
    (0.016, "config key 'models.diffusion.keep_kimg': 0.016 is not of type 'array'"),
])
def test_bad_keep_kimg_names_the_key(value, words):
    config = short()
    config["models"]["diffusion"]["keep_kimg"] = value
    assert words in error(config)


def test_a_network_entry_keeps_nothing():
    config = with_sampler_entry(keep_kimg=[0.016])
    assert "config key 'models.ddim.keep_kimg': 'ddim' trains nothing" in error(config)


def test_experiment_tags_take_numbers_or_texts_on_every_type():
    config = with_sampler_entry(experiment={"name": "sampler", "x": "ddim 3", "axis": "sampler"})
    config["models"]["diffusion"]["experiment"] = {"name": "sampler", "x": "dpm-solver++ 5", "axis": "sampler"}
    config["models"]["stylegan2"]["experiment"] = {"name": "model size", "x": 1024}
    config["models"]["ext"] = {"type": "external", "samples": {"cxr": "results/x.npy"},
                               "experiment": {"name": "model size", "x": 2048}}
    validate_config(config, SCHEMA, REPO)


@pytest.mark.parametrize("tag, words", [
    ({"name": "sampler"}, "config key 'models.ddim.experiment': 'x' is a required property"),
    ({"name": "sampler", "x": [1]}, "config key 'models.ddim.experiment.x': [1] is not of type 'number', 'string'"),
    ({"name": "sampler", "x": 1, "unit": "s"}, "('unit' was unexpected)"),
    ({"name": "--", "x": 1}, "config key 'models.ddim.experiment.name': experiment name '--' has no letter or digit"),
    ({"name": "Sampler!", "x": 1, "axis": "sampler"},
     "config key 'models.ddim.experiment.name': 'Sampler!' and 'sampler' share the folder 'sampler'"),
    ({"name": "sampler", "x": 1, "axis": "steps"},
     "config key 'models.ddim.experiment.axis': 'steps', but another entry of experiment 'sampler' has 'sampler'"),
])
def test_bad_experiment_tags_name_the_key(tag, words):
    config = with_sampler_entry(experiment=tag)
    config["models"]["diffusion"]["experiment"] = {"name": "sampler", "x": "dpm-solver++ 5", "axis": "sampler"}
    assert words in error(config)


def test_kept_network_names_agree_between_the_config_check_and_training():
    """config.py checks keep_kimg and network.kimg by the file name training writes (loop.kept_network_name)."""
    from medmem.config import _kimg_text
    from medmem.training.loop import kept_network_name

    for value, text in [(0.032, "0.032"), (40.0, "40"), (2.5, "2.5"), (0.0320000001, "0.032"), (1e-7, "0")]:
        assert _kimg_text(value) == text and kept_network_name(value) == f"network-{text}kimg.pt"
