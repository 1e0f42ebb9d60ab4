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
