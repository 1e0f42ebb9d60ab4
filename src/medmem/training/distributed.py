"""Data-parallel training through `torchrun`: process group, device choice, the per-rank slice,
gradient all-reduce.

Gradients are all-reduced by hand (not with DistributedDataParallel) because the regularizers
need double backward (R1), which DDP does not support.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medmem.devices import resolve_device


@dataclass
class Context:
    """Where this process trains: its rank in 0..world_size-1 and its torch device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes files and logs."""
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """One process per GPU under torchrun (gloo on CPU, NCCL on CUDA); a plain process otherwise.

    `device`: "auto", "cpu" or "cuda" (`medmem.devices.resolve_device`; InputError for "cuda"
    without CUDA). Rank and world size come from torchrun's RANK and WORLD_SIZE (0 and 1 without
    them); GPUs are chosen through CUDA_VISIBLE_DEVICES, and under torchrun each rank takes
    LOCAL_RANK. Initialises the process group when WORLD_SIZE > 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device)
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world_size, dev)


def rank_slice(n: int, ctx: Context) -> slice:
    """This rank's part of `n` items drawn for the whole global batch: the `ctx.rank`-th of
    `ctx.world_size` consecutive blocks of ⌊n / world_size⌋ items (when n does not split evenly the
    last n mod world_size items belong to no rank)."""
    per = n // ctx.world_size
    return slice(ctx.rank * per, (ctx.rank + 1) * per)


def local(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    """`x[rank_slice(len(x), ctx)]` moved to this rank's device: every rank draws the randomness of
    the whole global batch from the same generator and keeps its own rows, so any number of
    processes trains the same model."""
    return x[rank_slice(x.shape[0], ctx)].to(ctx.device)


def all_reduce_gradients(params, ctx: Context) -> None:
    """Average the gradients of `params` over all ranks in place (one flat all-reduce); parameters
    without a gradient are skipped. Nothing happens in a single process."""
    if ctx.world_size == 1:
        return
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def all_reduce_mean(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The mean of tensor `x` over all ranks (a new tensor; `x` itself in a single process)."""
    if ctx.world_size == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / ctx.world_size


def barrier(ctx: Context) -> None:
    """Wait for every rank (nothing in a single process)."""
    if ctx.world_size > 1:
        dist.barrier()
