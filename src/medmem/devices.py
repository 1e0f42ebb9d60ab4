"""Which GPUs a job uses.

Under SLURM (or any scheduler that sets CUDA_VISIBLE_DEVICES) the job's GPUs are already chosen.
A local `snakemake --cores N --resources gpu=G` only counts GPUs and never sets
CUDA_VISIBLE_DEVICES, so concurrent jobs would all land on GPU 0: `claim_gpus` gives each job
its own GPUs through one lock file per GPU (held until the process exits, released by the kernel
even on a kill). A training job that sees several GPUs runs one process per GPU under torchrun.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import tempfile
from pathlib import Path

from medmem.errors import InputError

log = logging.getLogger(__name__)
LOCK_DIR = Path(os.environ.get("MEDMEM_GPU_LOCKS", Path(tempfile.gettempdir()) / "medmem-gpu-locks"))
_held: list = []  # open lock files: the claim lasts as long as the process


def visible_gpu_count() -> int:
    """CUDA devices this process can see (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str) -> str:
    """The device type a job runs on: "auto" gives "cuda" where CUDA is available, else "cpu";
    any other name ("cpu", "cuda") is kept. Raises InputError for "cuda" without a CUDA device."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    return device


def claim_gpus(n: int, total: int | None = None, lock_dir: Path | None = None) -> list[int] | None:
    """Reserve `n` GPUs no other medmem process holds and make them the only visible ones.

    Returns the GPU indices, or None where nothing is to be done: no GPUs wanted, the scheduler
    already chose (CUDA_VISIBLE_DEVICES set), or a torchrun child (its launcher claimed them).
    `total`: GPUs on the machine (default: the visible ones); `lock_dir`: the lock files' folder
    (default LOCK_DIR, $MEDMEM_GPU_LOCKS or TMPDIR/medmem-gpu-locks). Sets CUDA_VISIBLE_DEVICES.
    Raises InputError when the machine has fewer than `n` GPUs or fewer than `n` are free.
    """
    if n <= 0 or "CUDA_VISIBLE_DEVICES" in os.environ or "LOCAL_RANK" in os.environ:
        return None
    total = visible_gpu_count() if total is None else total
    if total == 0:
        return None
    if n > total:
        raise InputError(f"the job asks for {n} GPUs but this machine has {total}")
    folder = lock_dir or LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    claimed, files = [], []
    for index in range(total):
        handle = open(folder / f"gpu{index}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        claimed.append(index)
        files.append(handle)
        if len(claimed) == n:
            break
    if len(claimed) < n:
        for handle in files:
            handle.close()
        raise InputError(f"only {len(claimed)} of {total} GPUs are free, the job needs {n}: start Snakemake with "
                         f"--resources gpu={total} so that it never runs more GPU jobs than there are GPUs")
    _held.extend(files)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, claimed))
    log.info("using GPU(s) %s", os.environ["CUDA_VISIBLE_DEVICES"])
    return claimed


def torchrun_command(argv: list[str], processes: int) -> list[str]:
    """The command line that runs this same medmem command (`argv`: its arguments after `medmem`)
    once per process, `processes` of them, under torchrun on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "-m", "medmem.cli", *argv]


def processes_for(requested: int, device: str) -> int:
    """Training processes: `requested` when positive, else one per visible GPU (at least 1; 1 when
    `device` is "cpu")."""
    if requested > 0:
        return requested
    if device == "cpu":
        return 1
    return max(1, visible_gpu_count())
