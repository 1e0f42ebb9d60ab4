"""Write samples straight into a memory-mapped .npy (100,000 × 5 × 256 × 256 never sits in RAM)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medmem.io import temporary_path, write_json
from medmem.training.loop import save_grid


def write_samples(output, shape, batches, info: dict, channel_names=(), preview: int = 16) -> None:
    """`batches` yields (start, uint8 array); the file appears under its name only when complete."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(output)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(shape))
        for start, images in batches:
            array[start:start + len(images)] = images
        array.flush()
        first = np.array(array[:preview])
        del array
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    write_json(info, output.with_suffix(".json"))
    save_grid(first, output.parent, output.stem + "_preview", list(channel_names))
