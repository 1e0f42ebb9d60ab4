"""Data-parallel training through `torchrun`: process group, device choice, gradient all-reduce.

Gradients are all-reduced by hand (not with DistributedDataParallel) because the regularizers
need double backward (R1), which DDP does not support.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """One process per GPU under torchrun (gloo on CPU, NCCL on CUDA); a plain process otherwise.

    GPUs are chosen through CUDA_VISIBLE_DEVICES; under torchrun each rank takes LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world_size, dev)


def all_reduce_gradients(params, ctx: Context) -> None:
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
    if ctx.world_size == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / ctx.world_size


def barrier(ctx: Context) -> None:
    if ctx.world_size > 1:
        dist.barrier()
