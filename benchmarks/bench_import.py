"""Images/s of the audit's import (`medmem.audit.images.import_images`) against a bare PIL read of the
same PNG files, in one run.

The bare read: `np.asarray(Image.open(f))` for every file, one process, nothing written. The import
reads the bytes, hashes them (SHA-256), decodes, checks sizes and appends to a memory-mapped .npy,
with 1 and with N worker processes. Runs interleave so all see the same page cache.

    python benchmarks/bench_import.py [--images 2000] [--size 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medmem.audit.images import import_images


def make_pngs(folder: Path, n: int, size: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):  # smooth anatomy-like images with noise: PNG compresses them as it would real slices
        a, b = rng.uniform(0.3, 0.7, 2)
        img = np.exp(-((yy - a) ** 2 + (xx - b) ** 2) / 0.05) * 220 + rng.normal(0, 6, (size, size))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"Subject_{i // 100}_slice_{i % 100}.png")


def bare_pil(folder: Path) -> float:
    start = time.perf_counter()
    for f in sorted(folder.glob("*.png")):
        np.asarray(Image.open(f))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench_import_"))
    try:
        make_pngs(work / "png", args.images, args.size)
        bare, one, many = [], [], []
        for r in range(args.repeats):
            bare.append(bare_pil(work / "png"))
            for workers, times in ((1, one), (args.workers, many)):
                t = time.perf_counter()
                import_images(work / "png", work / f"o{r}.npy", work / f"o{r}.csv", workers=workers)
                times.append(time.perf_counter() - t)
                (work / f"o{r}.npy").unlink()
        n = args.images
        rates = {"bare PIL read (1 process)": n / min(bare), "medmem import, 1 worker": n / min(one),
                 f"medmem import, {args.workers} workers": n / min(many)}
        for name, rate in rates.items():
            print(f"{name:32s} {rate:8.0f} images/s")
        print(f"ratio import (1 worker) / bare PIL:  {rates['medmem import, 1 worker'] / rates['bare PIL read (1 process)']:.2f}")
        print(f"ratio import ({args.workers} workers) / bare PIL: "
              f"{rates[f'medmem import, {args.workers} workers'] / rates['bare PIL read (1 process)']:.2f} "
              f"({os.cpu_count()} cores here)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
