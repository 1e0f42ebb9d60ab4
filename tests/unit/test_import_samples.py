"""`medmem import-samples`: a generator's samples made elsewhere as the workflow's samples file."""

import json

import numpy as np
from conftest import run_medmem
from PIL import Image


def _info(path, channels, size):
    path.write_text(json.dumps({"channels": channels, "size": size, "kind": "images",
                                "images": {"train": 1, "holdout": 1}}))
    return path


def test_a_png_folder_becomes_the_samples_array(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"seed{i:04d}.png")
    info = _info(tmp_path / "dataset.json", ["image"], 16)
    out = tmp_path / "vendor.npy"
    code, _, err = run_medmem("import-samples", folder, out, "--info", info)
    assert code == 0, err
    got = np.load(out)
    assert got.shape == (5, 1, 16, 16) and got.dtype == np.uint8
    assert np.array_equal(got[:, 0], images)  # in name order, pixel for pixel
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sampler"] == "external" and record["n"] == 5 and len(record["sha256"]) == 64
    import pandas as pd

    names = pd.read_csv(out.with_suffix(".csv"))
    assert list(names["name"]) == [f"seed{i:04d}.png" for i in range(5)]


def test_samples_of_another_size_are_refused_in_one_line(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    info = _info(tmp_path / "dataset.json", ["image"], 16)
    out = tmp_path / "vendor.npy"
    code, _, err = run_medmem("import-samples", folder, out, "--info", info)
    errors = [line for line in err.splitlines() if line.startswith("medmem: error")]
    assert code == 2 and len(errors) == 1 and "a.png" in errors[0] and "16×16" in errors[0], err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_an_array_with_too_few_channels_is_refused(tmp_path):
    np.save(tmp_path / "samples.npy", np.zeros((3, 2, 16, 16), np.uint8))
    info = _info(tmp_path / "dataset.json", ["t1", "t2", "flair"], 16)
    code, _, err = run_medmem("import-samples", tmp_path / "samples.npy", tmp_path / "v.npy", "--info", info)
    errors = [line for line in err.splitlines() if line.startswith("medmem: error")]
    assert code == 2 and len(errors) == 1 and "samples.npy" in errors[0], err
