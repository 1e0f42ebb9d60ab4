"""The added views against the study's whole-image search, in one run on this machine.

Times, on the same images and training set (BraTS-like: C channels of a disc of anatomy on a zero
background):
  (a) whole-image search: `highest_correlation` (the study's views; the reference time)
  (b) shift ±s: `shift_flip_correlation(flip=False)`: (2s+1)² whole-image searches; target <= (2s+1)²
  (c) shift ±s + flip: twice (b); target <= 2(2s+1)²
  (d) foreground: `foreground_correlation`; target <= 2× whole-image
  (e) detector: embedding both sets and the exact cosine top-k (an untrained encoder of the same size;
      training is timed by the detector_train rule's benchmark file)
and prints each as a ratio to (a).

    python benchmarks/bench_views.py [--queries 512 --train 2048 --size 64 --channels 5 --shift 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench_memorization import smooth_images, timed
from medmem.detector.model import Encoder, embed
from medmem.detector.search import cosine_topk
from medmem.memorization.search import highest_correlation
from medmem.memorization.views import foreground_correlation, shift_flip_correlation


def brain_like(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    images = np.concatenate([smooth_images(n, size, seed + c) for c in range(channels)], axis=1)
    yy, xx = np.mgrid[:size, :size]
    images[:, :, (yy - size / 2) ** 2 + (xx - size / 2) ** 2 > (0.42 * size) ** 2] = 0
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=5)
    parser.add_argument("--shift", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    train = brain_like(args.train, args.channels, args.size, 0)
    queries = brain_like(args.queries, args.channels, args.size, 10_000)
    common = {"top_k": 5, "device": args.device, "progress": False}
    n_shift = (2 * args.shift + 1) ** 2
    print(f"{args.queries} queries × {args.train} training images of {args.channels}×{args.size}², "
          f"{torch.get_num_threads()} threads, {args.device}")
    t_whole, _ = timed(lambda: highest_correlation(train, queries, **common))
    print(f"(a) whole-image search        {t_whole:8.2f} s   1.00×")
    t_shift, _ = timed(lambda: shift_flip_correlation(train, queries, shift=args.shift, flip=False, **common))
    print(f"(b) shift ±{args.shift} ({n_shift} searches)   {t_shift:8.2f} s   {t_shift / t_whole:5.2f}×  "
          f"(target <= {n_shift}×; {t_shift / t_whole / n_shift:.2f} of it)")
    t_flip, _ = timed(lambda: shift_flip_correlation(train, queries, shift=args.shift, flip=True, **common))
    print(f"(c) shift ±{args.shift} + flip            {t_flip:8.2f} s   {t_flip / t_whole:5.2f}×  "
          f"(target <= {2 * n_shift}×; {t_flip / t_whole / (2 * n_shift):.2f} of it)")
    t_fg, _ = timed(lambda: foreground_correlation(train, queries, top_k=5, device=args.device, progress=False))
    print(f"(d) foreground                {t_fg:8.2f} s   {t_fg / t_whole:5.2f}×  (target <= 2×)")
    torch.manual_seed(0)
    encoder = Encoder(args.channels, args.size).eval()
    t_det, _ = timed(lambda: cosine_topk(embed(encoder, train, device=args.device),
                                         embed(encoder, queries, device=args.device), top_k=5, device=args.device))
    print(f"(e) detector (embed + search) {t_det:8.2f} s   {t_det / t_whole:5.2f}×")


if __name__ == "__main__":
    main()
