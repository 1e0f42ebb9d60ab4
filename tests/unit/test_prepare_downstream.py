"""What prepared data meets downstream: 0-image files refused by every command that reads images,
strict JSON everywhere, the Inception Score with too few images, and a partial --configfile."""

import json
import math

import numpy as np
import pytest
from conftest import run_medmem, write_blob_dataset

from medmem.io import write_json


def _empty_dataset(root):
    from medmem.data.writer import DatasetWriter

    writer = DatasetWriter(root / "data", ["a"], 16, "cxr", [])
    writer.commit()  # commit() itself does not refuse: `prepare` checks before committing
    assert np.load(root / "data" / "train.npy").shape == (0, 1, 16, 16)
    return root / "data"


@pytest.mark.parametrize("command", ["train", "memorization", "memorization-queries", "plant", "features"])
def test_every_command_that_reads_images_refuses_a_0_image_file(tmp_path, command):
    if command == "memorization-queries":
        data = write_blob_dataset(tmp_path) / "data"
        empty = tmp_path / "queries.npy"
        np.save(empty, np.zeros((0, 2, 16, 16), np.uint8))
        args = ["memorization", data, empty, tmp_path / "out.parquet", "--device", "cpu"]
    else:
        data = _empty_dataset(tmp_path)
        empty = data / "train.npy"
        args = {"train": ["train", "stylegan2", data, tmp_path / "run", "--kimg", 1, "--device", "cpu"],
                "memorization": ["memorization", data, data / "train.npy", tmp_path / "out.parquet", "--device", "cpu"],
                "plant": ["plant", data, tmp_path / "planted.npy", tmp_path / "manifest.csv"],
                "features": ["features", empty, tmp_path / "f.npz", "--inception", "off"]}[command]
    code, _, err = run_medmem(*args)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("medmem: error:") and "Traceback" not in err, err
    assert f"{empty}: " in lines[-1] and "holds 0 images" in lines[-1]
    assert not any(p.name != "train.npy" and p.suffix in (".parquet", ".npy", ".npz", ".pt", ".csv")
                   for p in tmp_path.iterdir() if p.is_file() and p != empty)


def test_write_json_is_strict_json(tmp_path):
    write_json({"is": float("nan"), "fid": np.float32("inf"), "n": np.int64(3), "nested": [1.5, -math.inf]},
               tmp_path / "x.json")
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert strict == {"is": None, "fid": None, "n": 3, "nested": [1.5, None]}


def test_too_few_images_for_the_inception_score_is_written_as_not_computed(tmp_path, inception_weights):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.integers(0, 255, (12, 1, 32, 32), dtype=np.uint8))
    np.save(tmp_path / "samples.npy", rng.integers(0, 255, (6, 1, 32, 32), dtype=np.uint8))
    weights = ["--weights", inception_weights, "--inception", "required", "--device", "cpu", "--batch", "16"]
    assert run_medmem("features", tmp_path / "train.npy", tmp_path / "train.npz", *weights)[0] == 0
    code, _, err = run_medmem("quality", tmp_path / "samples.npy", tmp_path / "train.npz", tmp_path / "q.json",
                              "--kid-subsets", 5, *weights)
    assert code == 0, err
    text = (tmp_path / "q.json").read_text()
    record = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert record["computed"] and record["is_note"] == "not computed: 6 images, at least 10 needed"
    assert "IS (10 splits) not computed: 6 images, at least 10 needed" in record["note"]
    channel = next(iter(record["channels"].values()))
    assert channel["is_mean"] is None and channel["is_std"] is None and record["mean"]["is_mean"] is None
    assert channel["fid"] > 0 and channel["is_1split"] > 0  # what can be computed still is


def test_an_image_level_split_is_stated_in_the_summary(tmp_path):
    from medmem.report.summary import split_note, write_summary

    assert split_note({"split_level": "patient"}) == "" and split_note({}) == ""
    note = split_note({"split_level": "image", "images_without_patient": 7})
    assert note.startswith("split at image level for 7 images of unknown patient")
    rows = [{"dataset": "cxr", "model": m, "n_train": 10, "fid_note": "", "split_note": note}
            for m in ("stylegan2", "diffusion")]
    write_summary(rows, tmp_path / "s.csv", tmp_path / "s.md")
    assert (tmp_path / "s.md").read_text().count(f"- cxr: {note}") == 1


