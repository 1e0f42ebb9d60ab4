"""Networks kept along training (train key keep_kimg): each is the network a run of that length
writes, the last one is network.pt itself, and segments keep what they pass."""

import shutil

import pytest
import torch
from conftest import run_medmem, write_blob_dataset

TINY = ["--base", "16", "--layers", "1", "--mults", "1", "2", "--attention", "8", "--heads", "2",
        "--timesteps", "50", "--batch", "4", "--no-progress", "--checkpoint-kimg", "1", "--snapshot-kimg", "1",
        "--log-kimg", "0.008", "--snapshot-steps", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("keep")) / "data"


def train(data, out, *args):
    code, _, err = run_medmem("train", "diffusion", data, out, *TINY, *args)
    return code, err


def weights(path):
    return torch.load(path, weights_only=True)


def same_network(a, b) -> bool:
    a, b = weights(a), weights(b)
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else (
            a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k]))
        if isinstance(a[k], dict) and a[k] and all(torch.is_tensor(v) for v in a[k].values()) else a[k] == b[k]
        for k in a)


def test_kept_networks_are_those_of_shorter_runs_and_the_last_is_network_pt(data, tmp_path):
    code, err = train(data, tmp_path / "long", "--kimg", "0.024", "--keep-kimg", "0.008", "0.024")
    assert code == 0, err
    run = tmp_path / "long"
    assert (run / "network-0.024kimg.pt").read_bytes() == (run / "network.pt").read_bytes()
    kept = weights(run / "network-0.008kimg.pt")
    assert kept["kimg"] == 0.008 and kept["format"] == "medmem-network-1" and kept["task"] == "diffusion"
    assert not torch.equal(kept["weights"]["conv_in.weight"], weights(run / "network.pt")["weights"]["conv_in.weight"])
    # the network a run of 8 images × ... of 0.008 kimg writes, tensor for tensor
    code, err = train(data, tmp_path / "short", "--kimg", "0.008")
    assert code == 0, err
    assert same_network(run / "network-0.008kimg.pt", tmp_path / "short" / "network.pt")


def test_segments_keep_what_they_pass_and_a_resume_past_an_unkept_network_fails(data, tmp_path):
    args = ["--kimg", "0.024", "--keep-kimg", "0.008", "0.02"]
    code, err = train(data, tmp_path / "one", *args)
    assert code == 0, err
    seg = tmp_path / "seg"
    code, err = train(data, seg, *args, "--stop-kimg", "0.012", "--segment-output", tmp_path / "s1.pt")
    assert code == 0, err
    assert (seg / "kept" / "network-0.008kimg.pt").is_file() and not (seg / "network-0.008kimg.pt").exists()
    code, err = train(data, seg, *args, "--resume", tmp_path / "s1.pt")
    assert code == 0, err
    for name in ("network.pt", "network-0.008kimg.pt", "network-0.02kimg.pt"):
        assert (seg / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    # the kept networks gone, a rerun resumes past 0.008 kimg: it cannot make that network again
    shutil.rmtree(seg / "kept")
    code, err = train(data, seg, *args)
    assert code == 2 and "network-0.008kimg.pt: the network at 0.008 kimg was not kept" in err, err


def test_a_kept_network_beyond_the_budget_is_refused(data, tmp_path):
    code, err = train(data, tmp_path / "x", "--kimg", "0.008", "--keep-kimg", "0.012")
    assert code == 2 and "keep_kimg 0.012 is beyond the training length of 0.008 kimg" in err, err


def test_a_rerun_of_a_finished_run_rewrites_its_log_and_network(data, tmp_path):
    # Snakemake deletes a job's outputs before a forced rerun; the run's checkpoint, at the full
    # length, then resumes with nothing left to train, and must still give back both outputs
    run = tmp_path / "run"
    code, err = train(data, run, "--kimg", "0.016")
    assert code == 0, err
    log, network = (run / "log.csv").read_bytes(), (run / "network.pt").read_bytes()
    (run / "log.csv").unlink()
    (run / "network.pt").unlink()
    code, err = train(data, run, "--kimg", "0.016")
    assert code == 0, err
    assert (run / "log.csv").read_bytes() == log and (run / "network.pt").read_bytes() == network
