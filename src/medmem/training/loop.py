"""The training loop both generators share: a budget in kimg, atomic checkpoints that resume
bit-identically (all randomness is a function of the seed and the step), a CSV log, snapshot grids,
a progress bar and data parallelism through torchrun.

A model plugs in as a `TrainingTask` (StyleGAN2Task, DiffusionTask). Two optional members: a task's
`batch_indices(seed, step)` that returns an index array replaces the loop's minibatches (DP-SGD's
Poisson sampling; None: the loop's), and its `log_values()` adds columns to each log row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from medmem.errors import InputError
from medmem.images import save_grid
from medmem.io import atomic_output, kept_network_name
from medmem.training.distributed import Context, all_reduce_mean, barrier, rank_slice
from medmem.weights import load_plain, save_plain

log = logging.getLogger(__name__)


@runtime_checkable
class TrainingTask(Protocol):
    """What `train` needs of a generator's training.

    `name` ("stylegan2", "diffusion") is written into checkpoints and networks; `settings` (plain
    values) must match for a checkpoint to be resumed; `state()` gives the modules and optimizers
    to checkpoint by name (each with `state_dict`/`load_state_dict`).
    """

    name: str
    settings: dict

    def state(self) -> dict[str, Any]:
        """{name: module or optimizer} of everything a checkpoint holds."""

    def step(self, reals: torch.Tensor, step: int, gen: torch.Generator) -> dict[str, float]:
        """One optimisation step on this rank's share of the global minibatch: `reals` float32
        (local batch, C, H, W) in [-1, 1] on the task's device; `step` counts from 0; `gen` (CPU) is
        the step's generator, from which the randomness of the whole global batch is drawn. Returns
        the step's losses by name (floats)."""

    def snapshot(self, gen: torch.Generator, n: int = 16) -> torch.Tensor:
        """`n` images (n, C, H, W), float32, on the generator's [-1, 1] scale (diffusion: clipped to it;
        StyleGAN2: not clamped), for the snapshot grid; all randomness drawn from `gen`."""

    def export(self) -> dict:
        """What sampling needs (network config and weights; tensors and plain values only)."""


@dataclass
class LoopSettings:
    """The loop's budget and intervals, all in kimg (thousands of images shown)."""

    kimg: float
    batch: int  # global minibatch, split evenly over the processes
    seed: int = 0
    checkpoint_kimg: float = 50.0
    snapshot_kimg: float = 50.0
    log_kimg: float = 4.0
    keep_kimg: tuple = ()  # kimg at which the sampling network is also kept (network-<kimg>kimg.pt)


def batch_indices(nimg: int, batch: int, n: int, seed: int) -> np.ndarray:
    """Indices (batch,) into the n training images of the global minibatch that starts at image
    `nimg` (images shown so far): epochs are permutations seeded [seed, epoch], a minibatch may
    span two of them."""
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
    """The CPU generator of training step `step` (−1: the snapshots), seeded seed · 1,000,003 + step,
    from which every random draw of that step is made."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


_clock = time.monotonic  # seconds, for the time limit (tests replace it)


class OutOfTime(Exception):
    """Training stopped before its time limit; the checkpoint holds everything done so far."""


def save_checkpoint(path: Path, task, step: int, nimg: int, rows: list[dict], pending: dict | None = None) -> None:
    """The whole training state, tensors and plain values only (see `medmem.weights`).

    `pending`: the losses and seconds of the log interval in progress, so a run that stops between
    two log rows (a segment's end, a time limit) writes the same rows as one that never stopped.
    """
    payload = {"format": "medmem-checkpoint-1", "task": task.name, "fingerprint": _fingerprint(task.settings),
               "settings": task.settings, "step": step, "nimg": nimg, "log": rows,
               "pending": pending or {"nimg": nimg, "seconds": 0.0, "losses": []},
               "state": {k: v.state_dict() for k, v in task.state().items()}}
    save_plain(payload, path)


def read_checkpoint(path: Path, task, *, required: bool = False) -> dict | None:
    """A checkpoint's payload (on the CPU) if it was written with this task's settings.

    A missing file gives None. Another task's or other settings' checkpoint gives None with a
    warning (the run starts over), or an InputError when `required` (an explicit --resume).
    A file that is not a plain weights file is always an InputError naming it.
    """
    path = Path(path)
    if not path.is_file():
        if required:
            raise InputError(f"{path}: checkpoint to resume from does not exist")
        return None
    payload = load_plain(path, "checkpoint")
    if payload.get("fingerprint") != _fingerprint(task.settings) or "state" not in payload:
        if required:
            raise InputError(f"{path}: checkpoint written with other training settings than these")
        log.warning("%s was written with other settings: starting over", path)
        return None
    return payload


def load_checkpoint(path: Path, task, device, resume: Path | None = None,
                    limit_nimg: int | None = None) -> dict | None:
    """Restore the most advanced usable state: `path` (the run's own checkpoint) or `resume` (the
    previous segment's), whichever has seen more images without passing `limit_nimg` (the budget).
    The payload gets the file it came from under "source"."""
    best = None
    for candidate, required in ((path, False), (resume, True)):
        if candidate is None:
            continue
        payload = read_checkpoint(candidate, task, required=required)
        if payload is None:
            continue
        if limit_nimg is not None and payload["nimg"] > limit_nimg:
            log.warning("%s is at %.3f kimg, past the budget of %.3f: not used", candidate, payload["nimg"] / 1000,
                        limit_nimg / 1000)
            continue
        if best is None or payload["nimg"] > best["nimg"]:
            best = dict(payload, source=Path(candidate))
    if best is None:
        return None
    for key, module in task.state().items():
        module.load_state_dict(best["state"][key])
    log.info("resumed from %s at %.1f kimg", best["source"], best["nimg"] / 1000)
    return best


def _crossed(before: int, after: int, every_kimg: float) -> bool:
    every = max(1, int(round(every_kimg * 1000)))
    return after // every > before // every


def train(task: TrainingTask, images: np.ndarray, out_dir, settings: LoopSettings, ctx: Context, channel_names=(),
          to_uint8=None, progress: bool = True, *, stop_kimg: float | None = None, resume=None,
          segment_output=None, time_limit_s: float | None = None, clock=None) -> Path | None:
    """Train `task` on uint8 images (N, C, H, W) until `settings.kimg`; returns the exported network.

    Segments: with `stop_kimg` below the budget, training stops at the first minibatch that reaches
    it, writes its checkpoint (copied to `segment_output` when given) and returns None; a segment
    whose end is already behind the state it starts from only copies that state. Each run starts
    from `resume` (the previous segment's copy) or OUT_DIR/checkpoint.pt, whichever is further
    without passing the budget. Every random draw is a function of the seed and the step, so any
    chain of segments ends with the weights of one uninterrupted run, bit for bit on the CPU.

    Kept networks (`settings.keep_kimg`): at the first minibatch that reaches each k, the sampling
    network (network.pt's format and content, its `kimg` the images actually shown) is written to
    OUT_DIR/kept/, where it survives segment ends and time limits (a run that starts over clears it);
    the job that ends training copies each to OUT_DIR/network-<k>kimg.pt (one reached by the last
    minibatch is network.pt itself, bit for bit). Raises InputError for a k beyond the budget, or when a
    k was passed by a checkpoint this run resumed from without it being kept (delete checkpoint.pt).

    Time limit: with `time_limit_s` (seconds from the call, by `clock`), training stops once the next
    minibatch and a checkpoint would no longer fit before it, writes its checkpoint and raises
    OutOfTime; rerunning the same command continues from there.
    """
    clock = clock or _clock
    started = clock()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "checkpoint.pt"
    n = len(images)
    if settings.batch % ctx.world_size:
        raise ValueError(f"batch {settings.batch} does not split over {ctx.world_size} processes")
    total = int(round(settings.kimg * 1000))
    target = total if stop_kimg is None else min(total, int(round(stop_kimg * 1000)))
    keep = {int(round(k * 1000)): out_dir / "kept" / kept_network_name(k) for k in settings.keep_kimg}
    if any(k > total for k in keep):
        raise InputError(f"keep_kimg {max(keep) / 1000:g} is beyond the training length of {settings.kimg:g} kimg")
    resumed = load_checkpoint(checkpoint, task, ctx.device, Path(resume) if resume else None, total)
    step, nimg, rows = (resumed["step"], resumed["nimg"], resumed["log"]) if resumed else (0, 0, [])
    if resumed is None and ctx.main and (out_dir / "kept").is_dir():
        shutil.rmtree(out_dir / "kept")  # another run's networks
    pending = (resumed or {}).get("pending") or {"nimg": nimg, "seconds": 0.0, "losses": []}
    bar = tqdm(total=total, initial=nimg, unit="img", unit_scale=True, desc=task.name,
               disable=not (progress and ctx.main))
    tick_start, tick_nimg, tick_losses = time.perf_counter() - pending["seconds"], pending["nimg"], \
        list(pending["losses"])
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)

    def write_state() -> float:
        """Checkpoint and log.csv (main process); returns the seconds it took."""
        began = clock()
        if ctx.main:
            save_checkpoint(checkpoint, task, step, nimg, rows,
                            {"nimg": tick_nimg, "seconds": time.perf_counter() - tick_start, "losses": tick_losses})
            _write_log(out_dir, rows)
        barrier(ctx)
        return clock() - began

    save_seconds, step_seconds = 0.0, 0.0
    own_batches = getattr(task, "batch_indices", None)
    while nimg < target:
        step_began = clock()
        index = own_batches(settings.seed, step) if own_batches else None
        if index is None:
            index = batch_indices(nimg, settings.batch, n, settings.seed)[rank_slice(settings.batch, ctx)]
        reals = torch.from_numpy(np.stack([images[i] for i in index]) if len(index)
                                 else np.empty((0, *images.shape[1:]), images.dtype))  # an empty Poisson batch (DP)
        reals = reals.to(ctx.device).float() / 127.5 - 1
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
            row.update(getattr(task, "log_values", dict)())
            rows.append(row)
            bar.set_postfix(img_s=f"{row['images_per_s']:.1f}")
            tick_start, tick_nimg, tick_losses = time.perf_counter(), nimg, []
        if ctx.main and (_crossed(before, nimg, settings.snapshot_kimg) or nimg >= total) and to_uint8:
            save_grid(to_uint8(task.snapshot(step_generator(settings.seed, -1))), out_dir / "snapshots",
                      f"kimg{nimg / 1000:08.2f}", channel_names)
        for k, path in keep.items():
            if before < k <= nimg < total and ctx.main:  # one reached at the end is network.pt
                save_plain(_network(task, channel_names, nimg), path)
        step_seconds = max(step_seconds, clock() - step_began)
        if _crossed(before, nimg, settings.checkpoint_kimg) or nimg >= target:
            save_seconds = max(save_seconds, write_state())
        elif time_limit_s is not None and nimg < target:
            # every process stops at the same step: the main process decides for all
            late = float(clock() - started + 2 * step_seconds + 2 * save_seconds + 1 > time_limit_s)
            if all_reduce_mean(torch.tensor(late if ctx.main else 0.0, device=ctx.device), ctx) > 0:
                write_state()
                bar.close()
                raise OutOfTime(f"stopped at {nimg / 1000:.3f} of {target / 1000:g} kimg, before the time limit "
                                f"({time_limit_s / 60:.1f} min); {checkpoint} holds the progress, rerun to continue")
    bar.close()
    if target < total:
        if resumed is not None and resumed["nimg"] == nimg and resumed["source"] != checkpoint:
            write_state()  # nothing left to train in this segment, and the state came from --resume
        if ctx.main and segment_output is not None:
            with atomic_output(segment_output) as tmp:
                shutil.copyfile(checkpoint, tmp)
        barrier(ctx)
        log.info("segment done at %.3f kimg of %g", nimg / 1000, total / 1000)
        return None
    network = out_dir / "network.pt"
    if ctx.main:
        if not (out_dir / "log.csv").is_file():  # a rerun resumed at the full length (Snakemake deleted it)
            _write_log(out_dir, rows)
        save_plain(_network(task, channel_names, nimg), network)
        for k, path in keep.items():
            if k > nimg - settings.batch:  # reached by the last minibatch
                source = network
            elif path.is_file():
                source = path
            else:
                raise InputError(f"{path}: the network at {k / 1000:g} kimg was not kept (this run resumed from a "
                                 f"checkpoint past it; delete {checkpoint} to train again)")
            with atomic_output(out_dir / path.name) as tmp:
                shutil.copyfile(source, tmp)
    barrier(ctx)
    return network


def _write_log(out_dir: Path, rows: list[dict]) -> None:
    with atomic_output(out_dir / "log.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _network(task, channel_names, nimg: int) -> dict:
    """network.pt's payload: what sampling needs, after `nimg` images."""
    return {"format": "medmem-network-1", "task": task.name, "channel_names": list(channel_names),
            "kimg": nimg / 1000, **task.export()}


def seed_everything(seed: int) -> None:
    """Initial weights: the only randomness outside the per-step generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
