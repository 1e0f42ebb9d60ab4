"""Write samples straight into a memory-mapped .npy (100,000 × 5 × 256 × 256 never sits in RAM),
resumable: a run that is killed continues from its last written batch when started again."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from medmem.images import save_grid
from medmem.io import atomic_output, write_json

log = logging.getLogger(__name__)


def partial_paths(output) -> tuple[Path, Path]:
    """The unfinished samples (`.NAME.partial`) and their progress record (`.NAME.partial.json`)."""
    output = Path(output)
    return output.with_name(f".{output.name}.partial"), output.with_name(f".{output.name}.partial.json")


def _resume_point(partial: Path, progress: Path, key: str, shape: tuple) -> int:
    """Images already written by an earlier run of the same job (0 when there is none to trust)."""
    if not (partial.is_file() and progress.is_file()):
        return 0
    try:
        record = json.loads(progress.read_text())
        existing = np.load(partial, mmap_mode="r")
    except Exception:  # a torn record or header: start over
        return 0
    if record.get("key") != key or existing.shape != shape or existing.dtype != np.uint8:
        return 0
    return int(min(record.get("done", 0), shape[0]))


def write_samples(output, shape, batches, info: dict, channel_names=(), preview: int = 16) -> None:
    """Write the uint8 images of `shape` (n, C, H, W) to `output` (.npy), `info` to OUTPUT.json and
    the first `preview` images as one grid PNG per channel, OUTPUT-STEM_preview_NAME.png
    (`medmem.images.save_grid`, names from `channel_names`, else "0".."C-1").

    `batches(begin)` yields (start, uint8 array (k, C, H, W)) from image `begin` on, in order; the
    file appears under its name only when complete.

    Progress: after every batch the images are flushed to `.NAME.partial` and the count written to
    `.NAME.partial.json`, keyed by `info` and `shape` (which name the network's digest, seeds,
    sampler and shard). A later run with the same key continues after the last recorded batch;
    every image depends on its own seed only, so the result equals an uninterrupted run's bytes.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in shape)
    partial, progress = partial_paths(output)
    key = hashlib.sha256(json.dumps({"info": info, "shape": shape}, sort_keys=True, default=str).encode()).hexdigest()
    done = _resume_point(partial, progress, key, shape)
    if done:
        log.info("resuming %s at image %d of %d (from %s)", output, done, shape[0], partial)
        array = np.lib.format.open_memmap(partial, mode="r+")
    else:
        progress.unlink(missing_ok=True)
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
    for start, images in batches(done):
        array[start:start + len(images)] = images
        array.flush()  # the images are on disk before the record says so
        with atomic_output(progress) as tmp:
            tmp.write_text(json.dumps({"key": key, "done": start + len(images)}))
    array.flush()
    first = np.array(array[:preview])
    del array
    os.replace(partial, output)
    progress.unlink(missing_ok=True)
    write_json(info, output.with_suffix(".json"))
    save_grid(first, output.parent, output.stem + "_preview", channel_names)
