"""The learned copy detector: exact cosine search, weights that load without code, training that works."""

import numpy as np
import pytest
import torch
from conftest import run_medmem
from scipy.ndimage import gaussian_filter

from medmem.detector.model import Encoder, copy_augmentations, embed, load_detector, nt_xent, save_detector, train_detector
from medmem.detector.search import cosine_topk
from medmem.errors import InputError


def test_cosine_topk_equals_brute_force():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 16)).astype(np.float32)
    train[7] = 0  # a zero embedding: never matched
    train[20:40] = train[5] + rng.normal(scale=1e-7, size=(20, 16))  # near-ties beyond the screen's precision
    train[41] = train[5]  # an exact tie with 5
    queries = np.concatenate([train[[5, 3]], rng.normal(size=(6, 16)), np.zeros((1, 16))]).astype(np.float32)
    out = cosine_topk(train, queries, top_k=4, block_queries=3, block_train=64, margin=5)
    t = train.astype(np.float64)
    t /= np.where(np.linalg.norm(t, axis=1, keepdims=True) > 0, np.linalg.norm(t, axis=1, keepdims=True), 1)
    for i, q in enumerate(queries[:-1].astype(np.float64)):
        cos = t @ (q / np.linalg.norm(q))
        cos[7] = -np.inf
        order = np.lexsort((np.arange(len(t)), -cos))[:4]
        np.testing.assert_allclose(out["r"][i], cos[order], rtol=0, atol=1e-15)
        np.testing.assert_array_equal(out["index"][i], order)
    assert list(out["index"][0, :2]) == [5, 41]  # the exact tie: lowest index first
    assert np.isnan(out["r"][-1]).all() and (out["index"][-1] == -1).all()


def test_nt_xent_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    # view 0 of image 0: partner cos 1, others cos 0 (image 1) and 0 (image 1's view 2); τ = 1
    rows = [[1, 0, 0], [-1, 0, 0], [1, 0, 0], [-1, 0, 0]]  # partner first, then the two others
    expected = np.mean([np.log(np.exp(r).sum()) - r[0] for r in np.array(rows, float)])
    assert nt_xent(z1, z2, 1.0).item() == pytest.approx(expected)


def test_weights_round_trip_without_code(tmp_path):
    model = Encoder(3, 16, width=8, dim=16).eval()
    path = tmp_path / "det.pt"
    save_detector(model, path, {"seed": 1})
    payload = torch.load(path, weights_only=True)  # a state dict and plain config, no pickled module
    assert set(payload) == {"format", "config", "extra", "state_dict"} and payload["config"]["dim"] == 16
    loaded, extra = load_detector(path)
    x = np.random.default_rng(0).integers(0, 255, (4, 3, 16, 16), dtype=np.uint8)
    np.testing.assert_array_equal(embed(model, x), embed(loaded, x))
    assert extra == {"seed": 1}
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt"):
        load_detector(tmp_path / "bad.pt")
    torch.save({"format": "medmem-copy-detector-1", "config": {"channels": 2, "size": 16}, "extra": {},
                "state_dict": payload["state_dict"]}, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="do not match"):
        load_detector(tmp_path / "wrong.pt")


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 24, 24))
    for i in range(n):
        for _ in range(4):
            y, xx = rng.integers(4, 20, 2)
            x[i, 0, y, xx] = rng.uniform(0.5, 1)
    x = gaussian_filter(x, (0, 0, 2, 2))
    return np.clip(x / x.max() * 255, 0, 255).astype(np.uint8)


def test_training_is_deterministic_and_learns_copies():
    train = _blobs(40, 1)
    trained, losses = train_detector(train, steps=120, batch=32, width=8, dim=32, seed=3, progress=False)
    again, _ = train_detector(train, steps=2, batch=32, width=8, dim=32, seed=3, progress=False)
    twice, _ = train_detector(train, steps=2, batch=32, width=8, dim=32, seed=3, progress=False)
    for a, b in zip(again.state_dict().values(), twice.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.3
    # fresh copies carrying the augmentations (a held-out draw): the trained encoder finds their sources
    torch.manual_seed(99)
    augment = copy_augmentations(24)
    copies = np.stack([np.clip(np.rint(augment(torch.from_numpy(img).float() / 255).numpy() * 255), 0, 255)
                       for img in train]).astype(np.uint8)

    def found(model):
        return np.mean(cosine_topk(embed(model, train), embed(model, copies), top_k=1)["index"][:, 0]
                       == np.arange(len(train)))
    untrained = np.mean([found(Encoder(1, 24, width=8, dim=32).eval()) for _ in range(3)])
    assert found(trained) >= untrained + 0.15


def test_cli_bad_weights(tmp_path):
    from medmem.data.writer import DatasetWriter

    writer = DatasetWriter(tmp_path / "data", ["t1"], 16, "brats", ["t1_coverage"])
    images = np.random.default_rng(0).integers(0, 255, (4, 1, 16, 16), dtype=np.uint8)
    writer.add("train", images, [{"subject": "S", "slice": z, "t1_coverage": 0.5} for z in range(4)])
    writer.commit()
    np.save(tmp_path / "q.npy", images)
    (tmp_path / "w.pt").write_bytes(b"junk")
    code, _, err = run_medmem("detector-search", tmp_path / "data", tmp_path / "w.pt", tmp_path / "q.npy",
                              tmp_path / "out.parquet")
    assert code == 2 and "w.pt" in err and not (tmp_path / "out.parquet").exists()
