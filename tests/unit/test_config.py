import copy

import pytest
import yaml
from conftest import REPO

from medmem.config import load_config, validate_config
from medmem.errors import InputError

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def default():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_embedded_default_is_valid_and_gets_defaults():
    config = validate_config(default(), SCHEMA, REPO)
    assert config["on_bad_input"] == "fail"
    assert config["datasets"]["cxr"]["split"]["seed"] == 0


def test_defaults_fill_nested_keys():
    config = validate_config({"datasets": {"x": {"kind": "brats", "source": "phantom",
                                                 "split": {"train": 2, "holdout": 1}}}},
                             SCHEMA, REPO)
    d = config["datasets"]["x"]
    assert d["size"] == 256 and d["phantom"]["shape"] == [240, 240, 155] and d["split"]["seed"] == 0


@pytest.mark.parametrize("change, key, words", [
    (lambda c: c.update(colour="red"), "config", "'colour' was unexpected"),
    (lambda c: c["datasets"]["brats20"].update(sise=64), "datasets.brats20", "'sise' was unexpected"),
    (lambda c: c["datasets"]["brats20"].update(size="big"), "datasets.brats20.size", "is not of type 'integer'"),
    (lambda c: c["datasets"]["cxr"].update(kind="ct"), "datasets.cxr.kind", "is not one of"),
    (lambda c: c["datasets"]["brats21"]["phantom"].update(shape=[60, 60]), "datasets.brats21.phantom.shape", "too short"),
    (lambda c: c["datasets"]["brats20"].pop("source"), "datasets.brats20", "'source' is a required property"),
    (lambda c: c.update(on_bad_input="ignore"), "on_bad_input", "is not one of"),
    (lambda c: c["datasets"]["brats20"].update(source="/no/such/folder"), "datasets.brats20.source", "does not exist"),
    (lambda c: c["datasets"]["brats20"]["split"].update(subject_order="config/brats20_subject_order.csv"),
     "datasets.brats20.split", "either subject_order or train"),
    (lambda c: c["datasets"]["brats20"].update(split={"subject_order": "nope.csv"}),
     "datasets.brats20.split.subject_order", "does not exist"),
    (lambda c: c["datasets"]["cxr"]["split"].update(train=3), "datasets.cxr.split.train", "not used for kind cxr"),
])
def test_bad_config_names_the_key(change, key, words):
    config = copy.deepcopy(default())
    change(config)
    with pytest.raises(InputError) as err:
        validate_config(config, SCHEMA, REPO)
    message = str(err.value)
    assert (f"config key '{key}'" in message if key != "config" else message.startswith("config:")), message
    assert words in message


def test_paper_config_uses_the_study_order_files(tmp_path):
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for name in config["datasets"]:
        (tmp_path / name).mkdir()
        config["datasets"][name]["source"] = str(tmp_path / name)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config))
    config = load_config(path, SCHEMA, REPO)
    assert config["datasets"]["brats20"]["split"]["subject_order"] == "config/brats20_subject_order.csv"
    assert config["datasets"]["brats21"]["split"]["subject_order"] == "config/brats21_subject_order.csv"
    assert all(d["size"] == 256 for d in config["datasets"].values())


def test_shipped_order_files_match_the_study_counts():
    import pandas as pd

    for name, n_train, n_total in (("brats20", 313, 369), ("brats21", 1195, 1251)):
        order = pd.read_csv(REPO / "config" / f"{name}_subject_order.csv")
        assert len(order) == n_total and order.subject.is_unique
        assert (order.split == "train").sum() == n_train and (order.split[:n_train] == "train").all()


def test_zero_terminal_snr_with_epsilon_prediction_names_the_key():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"]["diffusion"].update(prediction="epsilon", zero_terminal_snr=True)
    with pytest.raises(InputError, match="config key 'models.diffusion.zero_terminal_snr': needs prediction: v"):
        validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", REPO)
    config["models"]["diffusion"]["prediction"] = "v"
    validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", REPO)


def test_the_audit_example_shares_the_embedded_defaults_data_stylegan2_and_search_key_for_key():
    """config/audit.yaml promises to reuse the embedded run's brats20 data, StyleGAN2 and detector: only
    identical settings let Snakemake reuse them instead of retraining over the default run's results."""
    audit = yaml.safe_load((REPO / "config" / "audit.yaml").read_text())
    embedded = default()
    assert audit["datasets"]["brats20"] == embedded["datasets"]["brats20"]
    assert audit["models"]["stylegan2"] == embedded["models"]["stylegan2"]
    assert audit["memorization"] == embedded["memorization"]
    assert audit["seed"] == embedded["seed"]
