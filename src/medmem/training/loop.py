"""The training loop both generators share: a budget in kimg, atomic checkpoints that resume
bit-identically (all randomness is a function of the seed and the step), a CSV log, snapshot grids,
a progress bar and data parallelism through torchrun.

A model plugs in as a *task* with: `state()` (modules and optimizers to checkpoint), `settings`
(what must match to resume), `step(reals, step, generator)` (one global minibatch; returns losses),
`snapshot(generator)` (images in [-1, 1]) and `export()` (what sampling needs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from medmem.io import atomic_output
from medmem.training.distributed import Context, all_reduce_mean, barrier

log = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    kimg: float
    batch: int  # global minibatch, split evenly over the processes
    seed: int = 0
    checkpoint_kimg: float = 50.0
    snapshot_kimg: float = 50.0
    log_kimg: float = 4.0


def batch_indices(nimg: int, batch: int, n: int, seed: int) -> np.ndarray:
    """Training images of the minibatch starting at image `nimg`: a fresh seeded permutation per epoch."""
    out = []
    position = nimg
    while len(out) < batch:
        epoch, offset = divmod(position, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = perm[offset:offset + batch - len(out)]
        out.extend(take.tolist())
        position += len(take)
    return np.array(out)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(path: Path, task, step: int, nimg: int, rows: list[dict]) -> None:
    payload = {"format": "medmem-checkpoint-1", "task": task.name, "fingerprint": _fingerprint(task.settings),
               "settings": task.settings, "step": step, "nimg": nimg, "log": rows,
               "state": {k: v.state_dict() for k, v in task.state().items()}}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, task, device) -> tuple[int, int, list[dict]] | None:
    if not path.is_file():
        return None
    payload = torch.load(path, map_location=device, weights_only=False)
    if payload.get("fingerprint") != _fingerprint(task.settings):
        log.warning("%s was written with other settings: starting over", path)
        return None
    for key, module in task.state().items():
        module.load_state_dict(payload["state"][key])
    log.info("resumed from %s at %.1f kimg", path, payload["nimg"] / 1000)
    return payload["step"], payload["nimg"], payload["log"]


def save_grid(images: np.ndarray, folder: Path, stem: str, channel_names: list[str]) -> None:
    """One PNG per channel: a square-ish grid of uint8 images (n, C, H, W)."""
    n, c, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    folder.mkdir(parents=True, exist_ok=True)
    for ch in range(c):
        grid = np.zeros((rows * h, cols * w), np.uint8)
        for i in range(n):
            r, q = divmod(i, cols)
            grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i, ch]
        name = channel_names[ch] if ch < len(channel_names) else str(ch)
        with atomic_output(folder / f"{stem}_{name}.png") as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")


def _crossed(before: int, after: int, every_kimg: float) -> bool:
    every = max(1, int(round(every_kimg * 1000)))
    return after // every > before // every


def train(task, images: np.ndarray, out_dir, settings: LoopSettings, ctx: Context, channel_names=(),
          to_uint8=None, progress: bool = True) -> Path:
    """Train `task` on uint8 images (N, C, H, W) until `settings.kimg`; returns the exported network."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "checkpoint.pt"
    n = len(images)
    if settings.batch % ctx.world_size:
        raise ValueError(f"batch {settings.batch} does not split over {ctx.world_size} processes")
    local = settings.batch // ctx.world_size
    resumed = load_checkpoint(checkpoint, task, ctx.device)
    step, nimg, rows = resumed if resumed else (0, 0, [])
    total = int(round(settings.kimg * 1000))
    bar = tqdm(total=total, initial=nimg, unit="img", unit_scale=True, desc=task.name,
               disable=not (progress and ctx.main))
    tick_start, tick_nimg, tick_losses = time.perf_counter(), nimg, []
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    while nimg < total:
        index = batch_indices(nimg, settings.batch, n, settings.seed)[ctx.rank * local:(ctx.rank + 1) * local]
        reals = torch.from_numpy(np.stack([images[i] for i in index])).to(ctx.device).float() / 127.5 - 1
        if ctx.device.type == "cuda":
            reals = reals.contiguous(memory_format=torch.channels_last)
        losses = task.step(reals, step, step_generator(settings.seed, step))
        tick_losses.append(losses)
        before, nimg, step = nimg, nimg + settings.batch, step + 1
        bar.update(settings.batch)
        if _crossed(before, nimg, settings.log_kimg) or nimg >= total:
            elapsed = time.perf_counter() - tick_start
            done = nimg - tick_nimg
            row = {"kimg": nimg / 1000, "step": step}
            for key in tick_losses[0]:
                value = torch.tensor([l[key] for l in tick_losses if key in l], dtype=torch.float64)
                row[key] = float(all_reduce_mean(value.mean().to(ctx.device), ctx)) if len(value) else float("nan")
            row.update({"images_per_s": done / elapsed, "s_per_kimg": elapsed / done * 1000,
                        "peak_gpu_mem_gb": (torch.cuda.max_memory_allocated(ctx.device) / 2**30
                                            if ctx.device.type == "cuda" else 0.0)})
            rows.append(row)
            bar.set_postfix(img_s=f"{row['images_per_s']:.1f}")
            tick_start, tick_nimg, tick_losses = time.perf_counter(), nimg, []
        if ctx.main and (_crossed(before, nimg, settings.snapshot_kimg) or nimg >= total) and to_uint8:
            save_grid(to_uint8(task.snapshot(step_generator(settings.seed, -1))), out_dir / "snapshots",
                      f"kimg{nimg / 1000:08.2f}", list(channel_names))
        if _crossed(before, nimg, settings.checkpoint_kimg) or nimg >= total:
            if ctx.main:
                save_checkpoint(checkpoint, task, step, nimg, rows)
                with atomic_output(out_dir / "log.csv") as tmp:
                    pd.DataFrame(rows).to_csv(tmp, index=False)
            barrier(ctx)
    bar.close()
    network = out_dir / "network.pt"
    if ctx.main:
        with atomic_output(network) as tmp:
            torch.save({"format": "medmem-network-1", "task": task.name, "channel_names": list(channel_names),
                        "kimg": nimg / 1000, **task.export()}, tmp)
    barrier(ctx)
    return network


def seed_everything(seed: int) -> None:
    """Initial weights: the only randomness outside the per-step generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
