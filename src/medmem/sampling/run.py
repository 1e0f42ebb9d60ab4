"""`medmem sample`: a trained network in, uint8 samples out, in whole batches of one fixed grid."""

from __future__ import annotations

from medmem.errors import InputError
from medmem.io import file_digest
from medmem.parallel import parse_shard

NEEDED = {"stylegan2": ("generator", "weights"), "diffusion": ("unet", "schedule", "weights")}


def load_network(path, device: str = "auto") -> dict:
    """A network.pt written by `medmem train` (plain tensors and settings only: weights_only loading).

    Returns the dict with 'task' ('stylegan2' or 'diffusion') and that task's parts; raises InputError
    naming the file when it is not such a network.
    """
    from medmem.devices import resolve_device
    from medmem.weights import load_plain

    network = load_plain(path, "network", resolve_device(device))
    if not isinstance(network, dict) or network.get("task") not in NEEDED:
        raise InputError(f"{path}: not a network written by medmem train")
    needed = NEEDED[network["task"]]
    if any(not isinstance(network.get(key), dict) for key in needed):
        raise InputError(f"{path}: a {network['task']} network needs {', '.join(needed)}; some are missing")
    return network


def shard_images(n: int, batch: int, shard: str | None) -> tuple[int, int]:
    """The images [first, stop) of `shard` (i/n) among `n` images made in batches of `batch`.

    Shards split the fixed grid of batches (images 0..batch-1, batch..2·batch-1, ...), so every image is
    made from its own seed in the same batch whatever the shard count, and its bytes are the same too
    (batched float arithmetic can differ in the last bit with the batch's composition). Raises
    InputError when there are fewer batches than shards.
    """
    i, parts = parse_shard(shard)
    batches = -(-n // batch)
    first, stop = i * batches // parts * batch, min(n, (i + 1) * batches // parts * batch)
    if stop <= first:
        raise InputError(f"--shard {shard}: {n} images make {batches} batches of {batch}, fewer than the shards; "
                         "lower --batch or the shard count")
    return first, stop


def run_sample(network: dict, network_path, output, *, n: int, seed: int, batch: int, precision: str = "float32",
               truncation: float = 1.0, noise_mode: str = "const", sampler: str = "ancestral",
               steps: int | None = None, raw_weights: bool = False, channel_names=(), shard: str | None = None,
               device: str = "auto") -> None:
    """Write images seed+first .. seed+stop-1 of the set of `n` (all of them without `shard`) to `output`.

    `output` (.npy, uint8 N×C×H×W) gets a .json record beside it (network digest, sampler, shard; a
    DP-SGD network's "privacy": the accountant's ε and δ per training image) and preview grids. StyleGAN2 uses `truncation` and `noise_mode`; diffusion `sampler`, `steps` (1 to the
    network's timesteps; None: all) and `raw_weights` (instead of the EMA). Raises InputError for
    counts below 1 or steps out of range.
    """
    from medmem.devices import resolve_device

    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    device = resolve_device(device)
    names = list(channel_names) or network.get("channel_names", [])
    first, stop = shard_images(n, batch, shard)
    record = {"network_sha256": file_digest(network_path)}
    i, parts = parse_shard(shard)
    if parts > 1:
        record.update(shard=f"{i}/{parts}", first_index=first, n_total=n)
    if "privacy" in network:  # DP-SGD's guarantee travels with the samples it covers
        record["privacy"] = network["privacy"]
    if network["task"] == "stylegan2":
        from medmem.sampling.stylegan2 import sample

        sample(network, output, stop - first, seed + first, batch, truncation, noise_mode, device, names, precision,
               record=record)
        return
    from medmem.sampling.diffusion import sample

    timesteps = network["schedule"]["timesteps"]
    if steps is not None and not 1 <= steps <= timesteps:
        raise InputError(f"--steps must be between 1 and the network's {timesteps} timesteps, got {steps}")
    sample(network, output, stop - first, seed + first, batch, sampler, steps, device, names,
           "raw_weights" if raw_weights else "weights", precision, record=record)
