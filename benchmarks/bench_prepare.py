"""Subjects/s of `prepare brats` against a bare nibabel load of the same files, in one run.

Real-size phantom subjects (240×240×155, five .nii.gz volumes each). The target is a per-core
rate of at least 0.7 of the bare-load rate: the preprocessing must cost little beyond reading.
Two bare loads are timed: nibabel's documented accessor `get_fdata()` (float64), and the raw
stored array `np.asarray(img.dataobj)`, the fastest way nibabel offers. medmem reads through nibabel
too (with indexed_gzip when installed, as both bare loads do), so the ratio is the cost of the
preprocessing and the writing.

    python benchmarks/bench_prepare.py [--subjects 4]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from medmem.data.brats import prepare_brats
from medmem.data.phantoms import make_brats_phantoms


def bare_load(root: Path, raw: bool) -> float:
    start = time.perf_counter()
    for path in sorted(root.rglob("*.nii.gz")):
        image = nib.load(path)
        np.asarray(image.dataobj) if raw else image.get_fdata()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from nibabel._compression import HAVE_INDEXED_GZIP

    print(f"nibabel {nib.__version__}, .nii.gz read through {'indexed_gzip' if HAVE_INDEXED_GZIP else 'gzip'}")
    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        t = time.perf_counter()
        make_brats_phantoms(work / "in", args.subjects, seed=0, shape=(240, 240, 155), release=2021, workers=2)
        print(f"made {args.subjects} real-size phantom subjects in {time.perf_counter() - t:.1f} s")
        fdata, raw, ours = [], [], []
        for r in range(args.repeats):  # interleaved, so all see the same page cache and machine state
            fdata.append(bare_load(work / "in", raw=False))
            raw.append(bare_load(work / "in", raw=True))
            t = time.perf_counter()
            prepare_brats(work / "in", work / f"out{r}", n_train=args.subjects, n_holdout=0, size=256, workers=1)
            ours.append(time.perf_counter() - t)
        n = args.subjects
        fdata_rate, raw_rate, our_rate = n / min(fdata), n / min(raw), n / min(ours)
        print(f"bare nibabel get_fdata():   {fdata_rate:.3f} subjects/s (1 core)")
        print(f"bare nibabel raw dataobj:   {raw_rate:.3f} subjects/s (1 core)")
        print(f"medmem prepare brats:       {our_rate:.3f} subjects/s (1 worker, writing the outputs)")
        print(f"ratio ours / get_fdata():   {our_rate / fdata_rate:.2f} (target >= 0.70)")
        print(f"ratio ours / raw dataobj:   {our_rate / raw_rate:.2f}")
        t = time.perf_counter()
        prepare_brats(work / "in", work / "out_par", n_train=n, n_holdout=0, size=256, workers=2)
        print(f"medmem prepare brats:       {n / (time.perf_counter() - t):.3f} subjects/s (2 workers)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
