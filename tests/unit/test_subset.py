"""Datasets cut to their first N training subjects (config `subset_of`, `medmem subset`, rule
prepare_subset): the files, the config checks, the plan's sizes and the workflow's jobs."""

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_checkout, run_medmem, snakemake_command

from medmem.config import validate_config
from medmem.errors import InputError

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# training subjects in the order the split lists them (not sorted), with their number of slices
TRAIN = [("s07", 3), ("s02", 1), ("s11", 4), ("s05", 2)]
HOLDOUT = [("h1", 2), ("h0", 3)]


def image(subject: str, z: int) -> np.ndarray:
    """A 2×8×8 image that says whose slice it is: channel 0 the subject's number, channel 1 the slice."""
    return np.stack([np.full((8, 8), int(subject[1:])), np.full((8, 8), 100 + z)]).astype(np.uint8)


@pytest.fixture
def parent(tmp_path):
    """A prepared dataset written as the preparation writes one (DatasetWriter), slices not sorted by subject."""
    from medmem.data.writer import DatasetWriter

    writer = DatasetWriter(tmp_path / "parent", ["t1", "flair"], 8, "brats", ["t1_coverage"])
    for split, subjects in (("train", TRAIN), ("holdout", HOLDOUT)):
        for subject, n in subjects:
            writer.add(split, np.stack([image(subject, z) for z in range(n)]),
                       [{"subject": subject, "slice": 10 + z, "t1_coverage": 0.5 + z / 8} for z in range(n)])
    writer.commit({"subjects": {"train": len(TRAIN), "holdout": len(HOLDOUT)}})
    return tmp_path / "parent"


def test_subset_holds_the_first_subjects_slices_in_order_and_the_same_holdout(parent, tmp_path):
    out = tmp_path / "b2"
    code, _, err = run_medmem("subset", parent / "train.npy", out, "--train-subjects", 2,
                              "--slices", parent / "slices.csv", "--info", parent / "dataset.json",
                              "--holdout", parent / "holdout.npy", "--parent", "brats20")
    assert code == 0, err
    # s07's three slices, then s02's one: written out by hand
    expected = np.stack([image("s07", 0), image("s07", 1), image("s07", 2), image("s02", 0)])
    np.testing.assert_array_equal(np.load(out / "train.npy"), expected)
    assert (out / "holdout.npy").read_bytes() == (parent / "holdout.npy").read_bytes()
    slices = pd.read_csv(out / "slices.csv", dtype={"subject": str})
    train = slices[slices["split"] == "train"]
    assert train["index"].tolist() == [0, 1, 2, 3]
    assert list(zip(train["subject"], train["slice"])) == [("s07", 10), ("s07", 11), ("s07", 12), ("s02", 10)]
    assert train["t1_coverage"].tolist() == [0.5, 0.625, 0.75, 0.5]
    parent_lines = (parent / "slices.csv").read_text().splitlines()
    lines = (out / "slices.csv").read_text().splitlines()
    assert lines[0] == parent_lines[0]  # the same columns
    assert [line for line in lines if line.startswith("holdout,")] == \
        [line for line in parent_lines if line.startswith("holdout,")]
    info = json.loads((out / "dataset.json").read_text())
    assert info["images"] == {"train": 4, "holdout": 5} and info["subjects"] == {"train": 2, "holdout": 2}
    assert info["subset_of"] == {"dataset": "brats20", "train_subjects": 2, "subjects": ["s07", "s02"],
                                 "parent_images": {"train": 10, "holdout": 5}}
    assert (info["kind"], info["channels"], info["size"]) == ("brats", ["t1", "flair"], 8)
    # the stages read it as any prepared dataset
    from medmem.memorization.run import load_training_set

    images, table, names, _, _ = load_training_set(out / "train.npy")
    assert len(images) == 4 and names == ["t1", "flair"] and len(table) == 9


def test_all_subjects_give_the_parent_and_files_default_beside_train(parent, tmp_path):
    from medmem.data.subset import make_subset

    info = make_subset(parent, tmp_path / "all", 4)
    np.testing.assert_array_equal(np.load(tmp_path / "all" / "train.npy"), np.load(parent / "train.npy"))
    assert info["subset_of"]["dataset"] == "parent" and info["subset_of"]["subjects"] == ["s07", "s02", "s11", "s05"]
    assert (tmp_path / "all" / "slices.csv").read_text() == (parent / "slices.csv").read_text()


@pytest.mark.parametrize("n, words", [(5, "--train-subjects 5 exceeds the 4 training subjects"),
                                      (0, "--train-subjects must be at least 1")])
def test_bad_subject_counts_stop_with_one_line_and_no_output(parent, tmp_path, n, words):
    code, _, err = run_medmem("subset", parent / "train.npy", tmp_path / "out", "--train-subjects", n)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not any((tmp_path / "out").glob("*.npy")) and not (tmp_path / "out" / "dataset.json").exists()


def test_a_missing_holdout_or_mismatched_slices_names_the_file(parent, tmp_path):
    (parent / "holdout.npy").rename(tmp_path / "elsewhere.npy")
    code, _, err = run_medmem("subset", parent / "train.npy", tmp_path / "out", "--train-subjects", 1)
    assert code == 2 and f"{parent / 'holdout.npy'}: held-out images file does not exist" in err
    slices = pd.read_csv(parent / "slices.csv")
    slices.iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    code, _, err = run_medmem("subset", parent / "train.npy", tmp_path / "out", "--train-subjects", 1,
                              "--slices", tmp_path / "short.csv", "--holdout", tmp_path / "elsewhere.npy")
    assert code == 2 and "short.csv: 9 train rows for 10 images" in err
    assert not (tmp_path / "out" / "train.npy").exists()


def test_a_chest_xray_subset_counts_patients(cxr_phantom_dir, tmp_path):
    from medmem.data.cxr import prepare_cxr
    from medmem.data.subset import make_subset

    prepare_cxr(cxr_phantom_dir, tmp_path / "cxr", holdout_fraction=0.2, seed=0, size=16, workers=1)
    parent = pd.read_csv(tmp_path / "cxr" / "slices.csv", dtype={"subject": str})
    parent_train = parent[parent["split"] == "train"].sort_values("index")
    patients = list(dict.fromkeys(parent_train["subject"]))
    # the phantom's patients have 1-3 images: the first n whose images outnumber them
    n = next(k for k in range(1, len(patients)) if parent_train["subject"].isin(patients[:k]).sum() > k)
    kept = parent_train[parent_train["subject"].isin(patients[:n])]
    info = make_subset(tmp_path / "cxr" / "train.npy", tmp_path / "c3", n)
    assert info["subset_of"]["subjects"] == patients[:n] and info["subjects"]["train"] == n
    assert info["images"]["train"] == len(kept) > n
    np.testing.assert_array_equal(np.load(tmp_path / "c3" / "train.npy"),
                                  np.load(tmp_path / "cxr" / "train.npy")[kept["index"].to_numpy()])
    mine = pd.read_csv(tmp_path / "c3" / "slices.csv", dtype={"subject": str})
    assert mine.loc[mine["split"] == "train", "label"].tolist() == kept["label"].tolist()
    assert (tmp_path / "c3" / "holdout.npy").read_bytes() == (tmp_path / "cxr" / "holdout.npy").read_bytes()


# --- config ---


def subset_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"].update({
        "brats20_n2": {"subset_of": {"dataset": "brats20", "train_subjects": 2}},
        "brats20_n1": {"subset_of": {"dataset": "brats20_n2", "train_subjects": 1}},  # a subset's subset
        "cxr_n5": {"kind": "cxr", "subset_of": {"dataset": "cxr", "train_subjects": 5}}})
    return config


def test_a_subset_takes_its_parents_kind_and_size_and_no_split():
    config = validate_config(subset_config(), SCHEMA, REPO)
    d = config["datasets"]
    assert d["brats20_n2"] == {"subset_of": {"dataset": "brats20", "train_subjects": 2}, "kind": "brats", "size": 32}
    assert (d["brats20_n1"]["kind"], d["cxr_n5"]["kind"], d["cxr_n5"]["size"]) == ("brats", "cxr", 32)
    assert "split" not in d["cxr_n5"] and "phantom" not in d["cxr_n5"]
    assert validate_config(copy.deepcopy(config), SCHEMA, REPO) == config  # validating again changes nothing


@pytest.mark.parametrize("change, key, words", [
    (lambda d: d["brats20_n2"]["subset_of"].update(dataset="brats19"), "brats20_n2.subset_of.dataset",
     "no dataset 'brats19' in datasets (brats20, brats21, cxr"),
    (lambda d: d["brats20_n2"]["subset_of"].update(train_subjects=9), "brats20_n2.subset_of.train_subjects",
     "9 exceeds the 8 training subjects of 'brats20'"),
    (lambda d: d["brats20_n1"]["subset_of"].update(train_subjects=3), "brats20_n1.subset_of.train_subjects",
     "3 exceeds the 2 training subjects of 'brats20_n2'"),
    # the cxr phantom: 90 patients, round(0.15 × 90) = 14 held out (medmem.data.cxr.split_patients)
    (lambda d: d["cxr_n5"]["subset_of"].update(train_subjects=77), "cxr_n5.subset_of.train_subjects",
     "77 exceeds the 76 training subjects of 'cxr'"),
    (lambda d: d["brats20_n2"]["subset_of"].update(train_subjects=0), "brats20_n2.subset_of.train_subjects",
     "less than the minimum of 1"),
    (lambda d: d["brats20_n2"]["subset_of"].update(dataset="brats20_n1"), "brats20_n2.subset_of.dataset",
     "cycle (brats20_n2 → brats20_n1 → brats20_n2)"),
    (lambda d: d["brats20_n2"]["subset_of"].update(dataset="brats20_n2"), "brats20_n2.subset_of.dataset",
     "cycle (brats20_n2 → brats20_n2)"),
    (lambda d: d["brats20_n2"].update(source="phantom"), "brats20_n2.source", "not used with subset_of"),
    (lambda d: d["brats20_n2"].update(split={"train": 2, "holdout": 1}), "brats20_n2.split", "not used with subset_of"),
    (lambda d: d["brats20_n2"].update(phantom={"subjects": 3}), "brats20_n2.phantom", "not used with subset_of"),
    (lambda d: d["brats20_n2"].update(kind="cxr"), "brats20_n2.kind", "'cxr', but the kind of 'brats20'"),
    (lambda d: d["brats20_n1"].update(size=64), "brats20_n1.size", "64, but the size of 'brats20'"),
    (lambda d: d["cxr_n5"]["subset_of"].pop("train_subjects"), "cxr_n5.subset_of",
     "'train_subjects' is a required property"),
    (lambda d: d["cxr_n5"].pop("subset_of"), "cxr_n5", "'source' is a required property"),
])
def test_bad_subsets_name_the_key(change, key, words):
    config = subset_config()
    change(config["datasets"])
    with pytest.raises(InputError) as err:
        validate_config(config, SCHEMA, REPO)
    assert f"config key 'datasets.{key}'" in str(err.value) and words in str(err.value), str(err.value)


def test_the_cxr_phantoms_training_patients_are_those_of_the_split():
    """The config's count of a phantom chest x-ray set's training patients agrees with the split itself."""
    from medmem.config import training_subjects
    from medmem.data.cxr import split_patients

    for total, fraction in [(90, 0.15), (2, 0.1), (15, 0.2), (7, 0.5)]:
        _, split = split_patients(list(range(total)), fraction, 0)
        dataset = {"kind": "cxr", "source": "phantom", "phantom": {"subjects": total},
                   "split": {"holdout_fraction": fraction}}
        assert training_subjects(dataset) == sum(s == "train" for s in split.values())


# --- medmem plan ---


def test_plan_counts_the_subsets_subjects(tmp_path):
    from medmem.plan import plan_config, subset_images

    config = validate_config(subset_config(), SCHEMA, REPO)
    d = config["datasets"]
    # brats20: 8 training and 3 held-out phantom subjects, at most 39 slices each (the phantom's depth)
    assert subset_images("brats20_n2", d, REPO, tmp_path)[:2] == (2 * 39, 3 * 39)
    assert subset_images("brats20_n1", d, REPO, tmp_path)[:2] == (39, 3 * 39)
    # cxr: 90 phantom images (one per patient estimated), 14 held out, 76 training patients: 5 of 76
    assert subset_images("cxr_n5", d, REPO, tmp_path)[:2] == (5, 14)
    # the parent prepared: the first N subjects' slices counted in its slices.csv
    data = tmp_path / "data" / "brats20"
    data.mkdir(parents=True)
    rows = [{"split": "train", "index": i, "subject": s} for i, s in enumerate(["b", "b", "b", "a", "c", "c"])]
    pd.DataFrame(rows + [{"split": "holdout", "index": 0, "subject": "h"}]).to_csv(data / "slices.csv", index=False)
    (data / "dataset.json").write_text(json.dumps({"kind": "brats", "size": 32, "images": {"train": 6, "holdout": 1}}))
    assert subset_images("brats20_n2", d, REPO, tmp_path)[:2] == (4, 1)
    # the subset itself prepared: its own dataset.json
    (tmp_path / "data" / "brats20_n2").mkdir()
    (tmp_path / "data" / "brats20_n2" / "dataset.json").write_text(json.dumps(
        {"kind": "brats", "size": 32, "images": {"train": 70, "holdout": 9},
         "subset_of": {"dataset": "brats20", "train_subjects": 2}}))
    assert subset_images("brats20_n2", d, REPO, tmp_path)[:2] == (70, 9)
    out = plan_config(config, REPO, tmp_path / "none")
    assert re.search(r"^prepare_subset\s+3\s", out, re.M) and re.search(r"^prepare_brats\s+2\s", out, re.M)
    assert "brats20_n2: 78 training / 117 held-out images (2 of the 8 training subjects of brats20" in out


# --- the workflow ---


def test_dry_run_prepares_subsets_and_trains_on_them(tmp_path):
    work = copy_checkout(tmp_path / "repo")
    (work / "subset.yaml").write_text(yaml.safe_dump(subset_config()))
    proc = snakemake_command("-n", "-p", "--cores", "1", "--configfile", "subset.yaml", cwd=work)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    stats = out.split("Job stats")[-1]
    assert re.search(r"^prepare_subset\s+3$", stats, re.M) and re.search(r"^prepare_brats\s+2$", stats, re.M)
    assert re.search(r"^train_stylegan2\s+6$", stats, re.M)  # 3 datasets + 3 subsets
    assert ("medmem subset results/data/brats20/train.npy results/data/brats20_n2 --train-subjects 2 --parent "
            "brats20 --slices results/data/brats20/slices.csv --info results/data/brats20/dataset.json --holdout "
            "results/data/brats20/holdout.npy") in out
    assert "medmem subset results/data/brats20_n2/train.npy results/data/brats20_n1 --train-subjects 1" in out
    assert "medmem train stylegan2 results/data/brats20_n1/train.npy results/train/brats20_n1/stylegan2" in out
    assert "medmem train diffusion results/data/cxr_n5/train.npy results/train/cxr_n5/diffusion" in out
