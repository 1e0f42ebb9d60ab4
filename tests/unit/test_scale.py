"""Paper scale: training in chained segments and under a time limit, sampling in resumable shards read
as one set, and model files that never run code on load."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_medmem, write_blob_dataset

from medmem.errors import InputError
from medmem.io import ImageShards, open_image_shards

SG2 = ["--channel-base", "256", "--channel-max", "32", "--mapping-layers", "2", "--z-dim", "32", "--batch", "8",
       "--kimg", "0.064", "--checkpoint-kimg", "0.032", "--snapshot-kimg", "1", "--log-kimg", "0.016",
       "--device", "cpu", "--no-progress"]
TIMING = ["images_per_s", "s_per_kimg", "peak_gpu_mem_gb"]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = write_blob_dataset(tmp_path_factory.mktemp("scale"))
    code, _, err = run_medmem("train", "stylegan2", root / "data", root / "straight", *SG2)
    assert code == 0, err
    return root


def _plain(path):
    """A medmem file read the safe way: if this fails, the file holds more than weights and plain values."""
    return torch.load(path, weights_only=True)


def _assert_same_state(a: dict, b: dict, where: str):
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], dict):
            _assert_same_state(a[key], b[key], f"{where}.{key}")
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{where}.{key}"
        else:
            assert a[key] == b[key], f"{where}.{key}"


# --- point 2: segments and the time limit ---

def test_three_segments_end_with_the_weights_of_one_uninterrupted_run_bit_for_bit(blobs):
    out, data = blobs / "segmented", blobs / "data"
    # segment ends that are not multiples of the batch (8 images): each stops at the first step past its end
    code, _, err = run_medmem("train", "stylegan2", data, out, *SG2, "--stop-kimg", "0.02",
                              "--segment-output", blobs / "seg1.pt")
    assert code == 0, err
    assert not (out / "network.pt").exists() and _plain(blobs / "seg1.pt")["nimg"] == 24
    (out / "checkpoint.pt").unlink()  # the next job starts from the segment's own file alone
    code, _, err = run_medmem("train", "stylegan2", data, out, *SG2, "--stop-kimg", "0.044", "--resume",
                              blobs / "seg1.pt", "--segment-output", blobs / "seg2.pt")
    assert code == 0 and f"resumed from {blobs / 'seg1.pt'} at 0.0 kimg" in err, err
    assert _plain(blobs / "seg2.pt")["nimg"] == 48
    code, _, err = run_medmem("train", "stylegan2", data, out, *SG2, "--resume", blobs / "seg2.pt")
    assert code == 0, err
    straight = blobs / "straight"
    _assert_same_state(_plain(straight / "network.pt")["weights"], _plain(out / "network.pt")["weights"], "G_ema")
    _assert_same_state(_plain(straight / "checkpoint.pt")["state"], _plain(out / "checkpoint.pt")["state"], "state")
    # the log covers the whole training: the same rows (losses averaged over the same steps); only timings differ
    a, b = (pd.read_csv(p / "log.csv").drop(columns=TIMING) for p in (straight, out))
    assert len(a) == 4 and list(a["kimg"]) == [0.016, 0.032, 0.048, 0.064]
    pd.testing.assert_frame_equal(a, b)


def test_a_segment_already_behind_its_start_only_passes_the_state_on(blobs):
    """A rerun of an early segment (the chain lost a temporary file) must not train again from scratch."""
    out = blobs / "straight"
    code, _, err = run_medmem("train", "stylegan2", blobs / "data", out, *SG2, "--stop-kimg", "0.02",
                              "--segment-output", blobs / "again.pt")
    assert code == 0, err
    assert _plain(blobs / "again.pt")["nimg"] == 64 and "resumed from" in err


def test_a_run_stops_before_its_time_limit_and_a_rerun_continues_bit_for_bit(blobs, monkeypatch):
    from medmem import cli
    from medmem.training import loop

    ticks = iter(range(10**6))
    monkeypatch.setattr(loop, "_clock", lambda: float(next(ticks)))  # each reading of the clock: one more second
    out = blobs / "timed"
    args = cli.build_parser().parse_args(["train", "stylegan2", str(blobs / "data"), str(out), *SG2,
                                          "--time-limit-min", "0.3", "--time-margin-min", "0"])
    with pytest.raises(loop.OutOfTime, match="rerun to continue"):
        args.func(args)
    stopped = _plain(out / "checkpoint.pt")
    assert 0 < stopped["nimg"] < 64 and not (out / "network.pt").exists()
    monkeypatch.undo()
    code, _, err = run_medmem("train", "stylegan2", blobs / "data", out, *SG2)
    assert code == 0 and f"at {stopped['nimg'] / 1000:.1f} kimg" in err, err
    straight = blobs / "straight"
    _assert_same_state(_plain(straight / "network.pt")["weights"], _plain(out / "network.pt")["weights"], "G_ema")
    a, b = (pd.read_csv(p / "log.csv").drop(columns=TIMING) for p in (straight, out))
    pd.testing.assert_frame_equal(a, b)


def test_the_command_exits_75_with_its_checkpoint_when_time_runs_out(blobs):
    out = blobs / "late"
    args = [*SG2, "--kimg", "1000", "--time-limit-min", "0.05", "--time-margin-min", "0"]  # 3 s for 125,000 steps
    code, _, err = run_medmem("train", "stylegan2", blobs / "data", out, *args)
    assert code == 75, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("medmem: stopped at") and str(out / "checkpoint.pt") in last and "rerun" in last
    assert 0 < _plain(out / "checkpoint.pt")["nimg"] < 10**6 and not (out / "network.pt").exists()


def test_time_limit_and_segment_options_are_checked(blobs):
    code, _, err = run_medmem("train", "stylegan2", blobs / "data", blobs / "x", *SG2, "--time-limit-min", "1",
                              "--time-margin-min", "2")
    assert code == 2 and "--time-limit-min 1.0 leaves no time after the margin of 2.0 min" in err
    code, _, err = run_medmem("train", "stylegan2", blobs / "data", blobs / "x", *SG2, "--resume",
                              blobs / "missing.pt")
    assert code == 2 and f"{blobs / 'missing.pt'}: checkpoint to resume from does not exist" in err


# --- point 4: files that never run code ---

class _Marker:
    """Unpickling this runs a shell command that creates `path`: a file that runs code on load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.path}",)


def _crafted(path, marker):
    torch.save({"format": "medmem-network-1", "task": "stylegan2", "weights": {}, "generator": {},
                "evil": _Marker(marker)}, path)
    return path


def test_the_crafted_file_would_run_code_when_loaded_unsafely(tmp_path):
    """The check of the check: loading it the old way (weights_only=False) creates the marker."""
    marker = tmp_path / "ran"
    bad = _crafted(tmp_path / "bad.pt", marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(bad)!r}, weights_only=False)"], check=True)
    assert marker.exists()


def test_a_crafted_network_or_checkpoint_is_refused_without_running_it(blobs, tmp_path):
    marker = tmp_path / "ran"
    bad = _crafted(tmp_path / "network.pt", marker)
    code, _, err = run_medmem("sample", bad, tmp_path / "s.npy", "--n", "2", "--device", "cpu")
    assert code == 2 and not marker.exists()
    line = err.strip().splitlines()[-1]
    assert len(err.strip().splitlines()) == 1 and line.startswith(f"medmem: error: {bad}: refused")
    assert "posix.system" in line and not (tmp_path / "s.npy").exists()
    # as a run's own checkpoint, and as the previous segment's
    out = tmp_path / "run"
    out.mkdir()
    _crafted(out / "checkpoint.pt", marker)
    code, _, err = run_medmem("train", "stylegan2", blobs / "data", out, *SG2)
    assert code == 2 and f"{out / 'checkpoint.pt'}: refused" in err and not marker.exists()
    code, _, err = run_medmem("train", "stylegan2", blobs / "data", tmp_path / "other", *SG2, "--resume", bad)
    assert code == 2 and f"{bad}: refused" in err and not marker.exists()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    code, _, err = run_medmem("sample", garbage, tmp_path / "s.npy", "--n", "2")
    assert code == 2 and f"{garbage}: not a readable network file" in err and len(err.strip().splitlines()) == 1


def test_writing_anything_but_tensors_and_plain_values_is_refused(tmp_path):
    from medmem.weights import load_plain, save_plain

    with pytest.raises(TypeError, match="payload.net: Linear"):
        save_plain({"net": torch.nn.Linear(2, 2)}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    save_plain({"config": {"mults": (1, 2), "beta": None}, "w": torch.ones(2)}, tmp_path / "ok.pt")
    assert load_plain(tmp_path / "ok.pt", "network")["config"] == {"mults": (1, 2), "beta": None}


# --- point 3: sample shards ---

def test_the_shard_reader_indexes_like_the_concatenated_array(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, (n, 2, 3, 4), dtype=np.uint8) for n in (3, 1, 5)]
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"s{i}.npy")
        np.save(paths[-1], p)
    whole = np.concatenate(parts)
    lazy = open_image_shards(paths)
    assert isinstance(lazy, ImageShards) and lazy.shape == whole.shape and len(lazy) == 9 and lazy.dtype == np.uint8
    assert all(isinstance(p, np.memmap) for p in lazy.parts)
    for key in [0, 3, 8, -1, slice(2, 7), slice(None), slice(4, 9), slice(5, 2), np.array([8, 0, 3, 3]),
                (4, 1), (slice(1, 6), slice(0, 1)), (np.array([7, 2]), 0, slice(1, 3))]:
        np.testing.assert_array_equal(np.asarray(lazy[key]), whole[key], err_msg=str(key))
    assert isinstance(lazy[2:7], ImageShards) and isinstance(lazy[4:9], np.memmap)  # still lazy / one shard's view
    np.testing.assert_array_equal(np.asarray(lazy[2:7].reshape(5, 2, -1)[1:4]), whole[3:6].reshape(3, 2, -1))
    with pytest.raises(IndexError):
        lazy[9]
    assert isinstance(open_image_shards([paths[0]]), np.memmap)  # one file: its memory map, as open_images
    np.save(tmp_path / "odd.npy", np.zeros((2, 2, 3, 5), np.uint8))
    with pytest.raises(InputError, match=f"{tmp_path / 'odd.npy'}: images of shape"):
        open_image_shards([paths[0], tmp_path / "odd.npy"])
    with pytest.raises(InputError, match=f"{tmp_path / 'gone.npy'}: synthetic images file does not exist"):
        open_image_shards([paths[0], tmp_path / "gone.npy"], "synthetic images")


def test_samples_are_the_same_whatever_the_shard_count_and_the_search_reads_the_shards(blobs):
    network, out = blobs / "straight" / "network.pt", blobs / "shards"
    code, _, err = run_medmem("sample", network, out / "one.npy", "--n", 10, "--seed", 4, "--batch", 2,
                              "--device", "cpu")
    assert code == 0, err
    files = [out / f"sg.{i}-of-3.npy" for i in range(3)]
    for i, path in enumerate(files):
        code, _, err = run_medmem("sample", network, path, "--n", 10, "--seed", 4, "--batch", 2, "--shard",
                                  f"{i}-of-3", "--device", "cpu")
        assert code == 0, err
    # shards are whole batches of the one grid (5 batches of 2 images): 1, 2 and 2 batches
    assert [len(np.load(p)) for p in files] == [2, 4, 4]
    info = json.loads(files[1].with_suffix(".json").read_text())
    assert info["seeds"] == [6, 9] and info["first_index"] == 2 and info["n_total"] == 10 and info["shard"] == "1/3"
    code, _, err = run_medmem("sample", network, out / "x.npy", "--n", 10, "--batch", 8, "--shard", "0/3")
    assert code == 2 and "10 images make 2 batches of 8, fewer than the shards" in err
    whole = np.load(out / "one.npy")
    assert whole.std() > 0
    np.testing.assert_array_equal(np.asarray(open_image_shards(files)), whole)
    # the search over the shards equals the search over the one file (query indices across the shards)
    for name, queries in (("one", [out / "one.npy"]), ("sharded", files)):
        code, _, err = run_medmem("memorization", blobs / "data", *queries, out / f"{name}.parquet", "--device",
                                  "cpu", "--shard", "1/2")
        assert code == 0, err
    a, b = (pd.read_parquet(out / f"{n}.parquet") for n in ("one", "sharded"))
    assert sorted(a["query"].unique()) == [5, 6, 7, 8, 9]
    pd.testing.assert_frame_equal(a, b)


@pytest.fixture(scope="module")
def tiny_diffusion(blobs):
    args = ["--base", "16", "--layers", "1", "--mults", "1", "2", "--attention", "--timesteps", "60", "--batch",
            "4", "--kimg", "0.008", "--checkpoint-kimg", "1", "--snapshot-kimg", "1", "--snapshot-steps", "2",
            "--device", "cpu", "--no-progress"]
    code, _, err = run_medmem("train", "diffusion", blobs / "data", blobs / "diffusion", *args)
    assert code == 0, err
    return blobs / "diffusion" / "network.pt"


def test_a_killed_shard_continues_from_its_last_batch_with_the_same_bytes(tiny_diffusion, tmp_path):
    common = ["--n", 16, "--seed", 2, "--batch", 2, "--sampler", "ancestral", "--device", "cpu", "--shard", "1/2"]
    code, _, err = run_medmem("sample", tiny_diffusion, tmp_path / "straight.npy", *common)
    assert code == 0, err
    out = tmp_path / "killed.npy"
    progress = tmp_path / ".killed.npy.partial.json"
    proc = subprocess.Popen([sys.executable, "-m", "medmem.cli", "sample", str(tiny_diffusion), str(out),
                             *map(str, common)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["done"] >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "sampling ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(progress.read_text())["done"]
    assert 4 <= done < 8 and not out.exists() and (tmp_path / ".killed.npy.partial").exists()
    saved = {p.name: p.read_bytes() for p in tmp_path.glob(".killed.npy.partial*")}
    code, _, err = run_medmem("sample", tiny_diffusion, out, *common)
    assert code == 0 and f"at image {done} of 8" in err, err
    assert out.read_bytes() == (tmp_path / "straight.npy").read_bytes()
    assert not progress.exists() and not (tmp_path / ".killed.npy.partial").exists()
    # a partial file of other settings (another seed) is never continued
    for name in (".other.npy.partial", ".other.npy.partial.json"):
        (tmp_path / name).write_bytes(saved[name.replace("other", "killed")])
    code, _, err = run_medmem("sample", tiny_diffusion, tmp_path / "other.npy", *common[:2], "--seed", 3,
                              *common[4:])
    assert code == 0 and "resuming" not in err, err


def test_more_sample_shards_than_batches_is_a_config_error():
    import yaml
    from conftest import REPO

    from medmem.config import validate_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"]["stylegan2"].update(samples=24, sample_batch=12, sample_shards=3)
    with pytest.raises(InputError, match="config key 'models.stylegan2.sample_shards': 3 shards, but 24 samples "
                                         "make only 2 batches of sample_batch 12"):
        validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    config["models"]["stylegan2"]["sample_shards"] = 2
    validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
