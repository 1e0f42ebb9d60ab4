"""`medmem features` and `medmem quality`: files in, metrics out.

The training set's Inception features are computed once per dataset (`features`) and shared by
every model's `quality` run. Given the copy detector (`--encoder`, `--train`), `quality` also writes
a Fréchet distance and KID in its encoder's feature space under the key "encoder" (offline, never
mixed with the Inception figures). When Inception weights are unavailable and the mode is `auto`, both
record "not computed: ..." instead of numbers; `required` makes that an error.
"""

from __future__ import annotations

import io
import json
import logging

from pathlib import Path

import numpy as np

from medmem.devices import resolve_device
from medmem.errors import InputError
from medmem.io import atomic_output, dataset_files, open_image_shards, open_images, read_dataset_info, write_json
from medmem.io import channel_names as io_channel_names
from medmem.quality import metrics
from medmem.quality.inception import WeightsUnavailable, channel_features, load_extractor

log = logging.getLogger(__name__)
MODES = ("auto", "required", "off")


def _extractor(weights, mode, device):
    if mode == "off":
        return None, "not computed: switched off (quality.inception: off)"
    try:
        extractor, source = load_extractor(weights, device)
        return (extractor, source)
    except WeightsUnavailable as exc:
        if mode == "required":
            raise InputError(f"{exc} (quality.inception: required; set quality.inception_weights to a local "
                             "copy of pt_inception-2015-12-05-6726825d.pth)") from None
        log.warning("%s", exc)
        return None, str(exc)


def write_train_features(images_path, output, weights=None, mode="auto", device="cpu", batch=64,
                         channel_names=None, info=None) -> dict:
    """`medmem features`: Inception pool features (2048 float32 per image) of each channel of the
    training images ((N, C, H, W) uint8 .npy), saved as an .npz (`pool_<c>`: (N, 2048), and `meta`).

    mode: "auto" (no weights: record the reason instead), "required" (no weights: InputError) or
    "off"; weights: a local torch-fidelity Inception file (None: its download); device: "auto", "cpu"
    or "cuda". Channel names: `channel_names`, else those of `info` (dataset.json, default: beside the
    images), else "0", "1", ... (`medmem.io.channel_names`). Returns the metadata (available, note,
    weights, n, channel_names, images). Raises InputError for unreadable images or weights.
    """
    images = open_images(images_path, "training images")
    device = resolve_device(device)
    dataset = read_dataset_info(dataset_files(images_path, info=info).info)
    names = io_channel_names(images.shape[1], channel_names, dataset.get("channels"))
    extractor, source = _extractor(weights, mode, device)
    meta = {"available": extractor is not None, "note": "" if extractor else source, "weights": source
            if extractor else None, "n": int(len(images)), "channel_names": names, "images": str(images_path)}
    arrays = {}
    if extractor is not None:
        for c, name in enumerate(names):
            arrays[f"pool_{c}"] = channel_features(extractor, images, c, batch, device, f"inception {name}")["2048"]
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    with atomic_output(output) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return meta


IS_SPLITS = 10  # the Inception Score's splits (torch-fidelity's default; each split needs an image)


def read_train_features(path) -> tuple[dict, dict]:
    """(metadata, {"pool_<c>": (N, 2048) float32}) of a file written by `write_train_features`.

    Raises InputError naming `path` when it is missing or not such a file.
    """
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in data.files if k != "meta"}
    except Exception as exc:
        raise InputError(f"{path}: not a features file written by medmem features ({type(exc).__name__})") from None
    return meta, arrays


def quality(samples_path, train_features, output, weights=None, mode="auto", device="cpu", batch=64,
            kid_subsets: int = 100, kid_subset_size: int = 1000, encoder=None, encoder_train=None) -> dict:
    """`medmem quality`: FID, KID and IS of the synthetic images ((M, C, H, W) uint8, one .npy or a
    set's shards) per channel against the training features (`write_train_features`), written as
    JSON at `output` and returned.

    Result: computed, note, n_samples, n_train, weights, channels {name: fid, kid_mean, kid_std,
    kid_subset_size, is_mean, is_std (None with fewer than 10 images), is_1split}, mean (the channel
    means). FID is unitless (squared feature distance), KID an MMD² (may be slightly negative), IS
    >= 1. Not computed (numbers absent, reason in `note`) without weights in mode "auto".
    `encoder` (the copy detector's weights, detector.pt) with `encoder_train` (its train.npy, slices.csv
    beside it): also the key "encoder" (`encoder_quality`: FD and KID in that encoder's feature space, apart
    from every Inception figure); without them "encoder" says "not computed: ...".
    Raises InputError for a channel count other than the features', features computed with other
    weights, fewer than 2 synthetic or training images, `encoder` without `encoder_train` (or the reverse),
    a detector of another training set or image shape, or bad files.
    """
    meta, train = read_train_features(train_features)
    device = resolve_device(device)
    samples = open_image_shards(samples_path, "synthetic images")
    if not isinstance(samples_path, (str, Path)):
        samples_path = samples_path[0] if len(samples_path) == 1 else ", ".join(map(str, samples_path))
    names = meta["channel_names"]
    if (encoder is None) != (encoder_train is None):
        raise InputError("--encoder and --train go together (the copy detector's weights and its train.npy)")
    if samples.shape[1] != len(names):
        raise InputError(f"{samples_path}: {samples.shape[1]} channels, but the training features have {len(names)}")
    result = {"computed": False, "note": meta["note"], "n_samples": int(len(samples)), "n_train": meta["n"],
              "channels": {}, "mean": {}, "weights": meta["weights"]}
    extractor = None
    if meta["available"]:
        extractor, source = _extractor(weights, mode, device)
        if extractor is None:
            result["note"] = source
        elif source != meta["weights"]:
            raise InputError(f"{train_features}: computed with other Inception weights ({meta['weights']}) "
                             f"than now ({source}); delete it to recompute")
    if extractor is not None:
        if len(samples) < 2 or meta["n"] < 2:
            raise InputError("FID needs at least 2 synthetic and 2 training images")
        for c, name in enumerate(names):
            f = channel_features(extractor, samples, c, batch, device, f"inception {name}")
            mu1, s1 = metrics.statistics(f["2048"])
            mu2, s2 = metrics.statistics(train[f"pool_{c}"])
            kid_mean, kid_std, size = metrics.kid(f["2048"], train[f"pool_{c}"], kid_subsets, kid_subset_size)
            is_mean, is_std = (metrics.inception_score(f["logits_unbiased"], splits=IS_SPLITS)
                               if len(samples) >= IS_SPLITS else (None, None))  # else empty splits: NaN
            is_one, _ = metrics.inception_score(f["logits_unbiased"], splits=1)
            result["channels"][name] = {"fid": metrics.frechet_distance(mu1, s1, mu2, s2), "kid_mean": kid_mean,
                                        "kid_std": kid_std, "kid_subset_size": size, "is_mean": is_mean,
                                        "is_std": is_std, "is_1split": is_one}
        keys = next(iter(result["channels"].values())).keys()
        values = {k: [v[k] for v in result["channels"].values()] for k in keys}
        result["mean"] = {k: None if None in v else float(np.mean(v)) for k, v in values.items()}
        result["computed"], notes = True, []
        if len(samples) < 2048:
            notes.append(f"{len(samples)} synthetic images: fewer than the 2,048 Inception features, so FID "
                         "is biased upwards; compare FIDs only at equal sample counts")
        if len(samples) < IS_SPLITS:
            result["is_note"] = f"not computed: {len(samples)} images, at least {IS_SPLITS} needed"
            notes.append(f"IS ({IS_SPLITS} splits) {result['is_note']}")
        result["note"] = "; ".join(notes)
    result["encoder"] = (encoder_quality(samples, encoder, encoder_train, device, kid_subsets, kid_subset_size)
                         if encoder is not None else {"computed": False, "note": ENCODER_OFF})
    write_json(result, output)
    return result


ENCODER_OFF = ("not computed: no copy detector given (--encoder; the workflow passes it when "
               "memorization.detector.enabled is true)")


def encoder_quality(samples, weights, train_path, device="cpu", kid_subsets: int = 100,
                    kid_subset_size: int = 1000) -> dict:
    """Fréchet distance and KID between the synthetic and the training images in the copy detector's
    feature space: the embeddings (`medmem.detector.model.embed`, (N, dim) float32, every channel
    at once, as the detector sees them) of `samples` ((M, C, H, W) uint8, array or a set's shards)
    and of `train_path` (train.npy; slices.csv and dataset.json beside it, `load_training_set`).

    Returns {computed: True, fd, kid_mean, kid_std, kid_subset_size, n_samples, n_train, weights,
    feature_space: "copy-detector encoder of <dataset> (dim <d>)", note}: FD as
    `metrics.frechet_distance` of `metrics.statistics` (squared embedding distance, >= 0), KID as
    `metrics.kid` (torch-fidelity's unbiased MMD² with the kernel (x·y/d + 1)³, d the embedding
    dimension). <dataset>: the name of train.npy's folder. The encoder is trained per dataset, so the
    numbers compare generators on one dataset only: not FID/KID (Inception), not across datasets.
    Raises InputError for weights that are not a detector, trained on another training set
    (fingerprint) or for another channel count or image size, or fewer than 2 images on either side.
    """
    from medmem.detector.model import embed, load_detector
    from medmem.memorization.run import load_training_set

    train, _, _, _, fingerprint = load_training_set(train_path)
    model, extra = load_detector(weights)
    if extra.get("train_fingerprint") not in (None, fingerprint):
        raise InputError(f"{weights}: the detector was trained on another training set than {train_path}")
    shape = (model.config["channels"], model.config["size"], model.config["size"])
    for name, images in (("training images", train), ("synthetic images", samples)):
        if tuple(images.shape[1:]) != shape:
            raise InputError(f"{weights}: detector for {shape[0]}×{shape[1]}² images, the {name} are "
                             f"{images.shape[1]}×{images.shape[-2]}×{images.shape[-1]}")
    if len(samples) < 2 or len(train) < 2:
        raise InputError("the encoder's FD needs at least 2 synthetic and 2 training images")
    device = resolve_device(device)
    e_samples, e_train = embed(model, samples, device=device), embed(model, train, device=device)
    mu1, s1 = metrics.statistics(e_samples)
    mu2, s2 = metrics.statistics(e_train)
    kid_mean, kid_std, size = metrics.kid(e_samples, e_train, kid_subsets, kid_subset_size)
    fd = metrics.frechet_distance(mu1, s1, mu2, s2)
    dataset = dataset_files(train_path).train.resolve().parent.name
    log.info("copy-detector encoder of %s: FD %.4g, KID %.4g", dataset, fd, kid_mean)
    return {"computed": True, "fd": fd, "kid_mean": float(kid_mean),
            "kid_std": float(kid_std), "kid_subset_size": int(size), "n_samples": int(len(samples)),
            "n_train": int(len(train)), "weights": str(weights),
            "feature_space": f"copy-detector encoder of {dataset} (dim {e_train.shape[1]})",
            "note": "FD / KID in the copy detector's feature space: per dataset, not FID, not comparable across "
                    "datasets"}
