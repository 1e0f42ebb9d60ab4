"""`medmem memorization` and `memorization-gather`: the table interface, sharding, bad input."""

import numpy as np
import pandas as pd
import pytest
from conftest import run_medmem

from medmem.data.writer import DatasetWriter

# the study's views only (the schema's default adds shift, flip and foreground: tests/test_memorization_views.py)
STUDY_VIEWS = ("--shift", "0", "--no-flip", "--no-foreground")


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(3)
    writer = DatasetWriter(tmp_path / "data", ["t1", "t2", "seg"], 8, "brats", ["t1_coverage"])
    images = rng.integers(0, 255, (12, 3, 8, 8), dtype=np.uint8)
    images[:, 2] = 0
    images[::3, 2, 2:4, 2:4] = 204
    for s in range(3):
        writer.add("train", images[4 * s:4 * s + 4], [{"subject": f"S{s}", "slice": z, "t1_coverage": 0.5}
                                                      for z in range(10, 14)])
    writer.add("holdout", images[:2], [{"subject": "H", "slice": z, "t1_coverage": 0.5} for z in (1, 2)])
    writer.commit()
    queries = np.concatenate([images[[6, 1]], rng.integers(0, 255, (5, 3, 8, 8), dtype=np.uint8)])
    np.save(tmp_path / "queries.npy", queries)
    return tmp_path


def test_table_interface(dataset):
    out = dataset / "mem.parquet"
    code, _, err = run_medmem("memorization", *STUDY_VIEWS, dataset / "data", dataset / "queries.npy", out, "--top-k", 3,
                              "--device", "cpu")
    assert code == 0, err
    table = pd.read_parquet(out)
    for column in ("query", "view", "r_max", "train_index", "subject", "slice"):
        assert column in table.columns
    assert set(table.view) == {"0", "1", "2", "mr_mean", "all"}
    assert len(table) == 7 * 5
    copy = table[(table["query"] == 0) & (table.view == "all")].iloc[0]
    assert copy.train_index == 6 and copy.subject == "S1" and copy.slice == 12 and copy.r_max == pytest.approx(1)
    assert list(table[(table["query"] == 1) & (table.view == "0")].iloc[0].topk_index)[0] == 1
    # query 1 (a copy of training image 1) has an empty segmentation: r undefined; random ones are defined
    seg = table[table.view == "2"].set_index("query")
    assert seg.r_max.isna().tolist() == [False, True, False, False, False, False, False]
    assert list(seg.loc[0, "topk_index"]) == [0, 3, 6]  # identical segmentations: ties to the lowest index


def test_shards_gathered_equal_one_run(dataset):
    whole = dataset / "whole.parquet"
    assert run_medmem("memorization", *STUDY_VIEWS, dataset / "data", dataset / "queries.npy", whole, "--device", "cpu")[0] == 0
    shards = []
    for i in range(3):
        path = dataset / f"shard{i}.parquet"
        code, _, err = run_medmem("memorization", *STUDY_VIEWS, dataset / "data", dataset / "queries.npy", path,
                                  "--shard", f"{i}/3", "--device", "cpu")
        assert code == 0, err
        shards.append(path)
    assert len(pd.read_parquet(shards[0])) < len(pd.read_parquet(whole))
    gathered = dataset / "gathered.parquet"
    code, _, err = run_medmem("memorization-gather", gathered, *reversed(shards))
    assert code == 0, err
    a, b = pd.read_parquet(whole), pd.read_parquet(gathered)
    pd.testing.assert_frame_equal(a[["query", "view", "r_max", "train_index"]],
                                  b[["query", "view", "r_max", "train_index"]])
    code, _, err = run_medmem("memorization-gather", dataset / "bad.parquet", shards[0], shards[2])
    assert code == 2 and "exactly once" in err


@pytest.mark.parametrize("case", ["shape", "dtype", "missing", "shard", "cache"])
def test_bad_queries(dataset, case):
    path = dataset / "bad.npy"
    args = []
    if case == "shape":
        np.save(path, np.zeros((2, 3, 9, 8), np.uint8))
        words = "do not match"
    elif case == "dtype":
        np.save(path, np.zeros((2, 3, 8, 8), np.float32))
        words = "expected uint8"
    elif case == "missing":
        words = "does not exist"
    elif case == "shard":
        np.save(path, np.zeros((2, 3, 8, 8), np.uint8))
        args, words = ["--shard", "3/3"], "0 <= i < n"
    else:
        np.save(path, np.zeros((2, 3, 8, 8), np.uint8))
        args, words = ["--cache-gb", "lots"], "--cache-gb must be a number of GB or 'auto'"
    out = dataset / "out.parquet"
    code, _, err = run_medmem("memorization", *STUDY_VIEWS, dataset / "data", path, out, "--device", "cpu", *args)
    assert code == 2 and words in err and not out.exists()


def test_training_cache_size(monkeypatch):
    from medmem.errors import InputError
    from medmem.memorization.run import resolve_cache_gb

    assert resolve_cache_gb("auto", "cpu") == 4.0
    assert resolve_cache_gb("2.5", "cpu") == 2.5
    monkeypatch.setattr("torch.cuda.mem_get_info", lambda *a: (80 * 2**30, 141 * 2**30))
    assert resolve_cache_gb("auto", "cuda") == 40.0  # half the free memory
    assert resolve_cache_gb(None, "cuda") == 40.0
    with pytest.raises(InputError, match="positive"):
        resolve_cache_gb(0, "cpu")


def test_added_views(dataset):
    """--shift/--flip/--foreground add views beside the study's, with the matched translation and mirroring."""
    queries = np.load(dataset / "queries.npy")
    moved = np.zeros_like(queries[:1])
    moved[..., 1:, :] = queries[:1, :, :-1, :]  # training image 6 moved down one pixel
    np.save(dataset / "q2.npy", np.concatenate([queries, moved, queries[:1, ..., ::-1]]))
    out = dataset / "views.parquet"
    code, _, err = run_medmem("memorization", *STUDY_VIEWS, dataset / "data", dataset / "q2.npy", out, "--device", "cpu",
                              "--shift", 1, "--flip", "--foreground")
    assert code == 0, err
    table = pd.read_parquet(out)
    assert set(table.view) == {"0", "1", "2", "mr_mean", "all", "shift", "flip", "foreground"}
    study = pd.read_parquet(dataset / "views.parquet").query("view in ['0', 'all']")
    assert study["shift_y"].isna().all()  # the study's views carry no translation
    shift = table[table.view == "shift"].set_index("query")
    assert shift.loc[7, "train_index"] == 6 and shift.loc[7, "shift_y"] == -1 and shift.loc[7, "shift_x"] == 0
    flip = table[table.view == "flip"].set_index("query")
    assert flip.loc[8, "train_index"] == 6 and flip.loc[8, "flipped"] and flip.loc[8, "r_max"] == pytest.approx(1)
    fg = table[table.view == "foreground"].set_index("query")
    assert fg.loc[0, "train_index"] == 6 and fg.loc[0, "r_max"] == pytest.approx(1)
    # sharded and gathered: the same table
    shards = []
    for i in range(2):
        shards.append(dataset / f"v{i}.parquet")
        assert run_medmem("memorization", *STUDY_VIEWS, dataset / "data", dataset / "q2.npy", shards[-1], "--device", "cpu",
                          "--shift", 1, "--flip", "--foreground", "--shard", f"{i}/2")[0] == 0
    assert run_medmem("memorization-gather", dataset / "g.parquet", *shards)[0] == 0
    gathered = pd.read_parquet(dataset / "g.parquet")
    pd.testing.assert_frame_equal(table[["query", "view", "r_max", "train_index", "shift_y"]].sort_values(
        ["view", "query"]).reset_index(drop=True), gathered[["query", "view", "r_max", "train_index",
                                                                "shift_y"]].sort_values(["view", "query"])
        .reset_index(drop=True))


def test_negative_shift_is_refused(dataset):
    out = dataset / "neg.parquet"
    code, _, err = run_medmem("memorization", *STUDY_VIEWS, dataset / "data", dataset / "queries.npy", out, "--shift", -1)
    assert code == 2 and "--shift must be >= 0" in err and not out.exists()
