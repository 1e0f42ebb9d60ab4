"""`medmem train`: files in, trained network out. The work is in `loop.py` and the model's task."""

from __future__ import annotations

import logging
from pathlib import Path

from medmem.errors import InputError
from medmem.images import TO_UINT8
from medmem.io import open_images, read_dataset_info
from medmem.training import distributed
from medmem.training.loop import LoopSettings, seed_everything, train

log = logging.getLogger(__name__)


def _precision(args, default: str) -> str:
    """--precision, else float32 under the older --no-bf16, else the model's default."""
    return args.precision or ("float32" if args.no_bf16 else default)


def stylegan2_task(images, args, ctx):
    """The StyleGAN2Task for uint8 `images` (N, C, H, W) and `medmem train stylegan2`'s arguments.
    Raises InputError unless H = W is a power of two of at least 16."""
    from medmem.training.stylegan2 import StyleGAN2Task

    _, channels, height, width = images.shape
    if height != width or height < 16 or height & (height - 1):
        raise InputError(f"StyleGAN2 needs square power-of-two images of at least 16 pixels, got {height}×{width}")
    common = dict(resolution=height, img_channels=channels, channel_base=args.channel_base,
                  channel_max=args.channel_max)
    generator = dict(common, z_dim=args.z_dim, w_dim=args.z_dim, mapping_layers=args.mapping_layers)
    discriminator = dict(common, mbstd_group=args.mbstd_group)
    return StyleGAN2Task(generator, discriminator, ctx, batch=args.batch, r1_gamma=args.r1_gamma,
                         ema_rampup=None if args.no_ema_rampup else args.ema_rampup, flip=args.flip,
                         translate=args.translate,
                         precision=_precision(args, "bf16" if ctx.device.type == "cuda" else "float32"))


def diffusion_task(images, args, ctx):
    """The DiffusionTask for uint8 `images` (N, C, H, W) and `medmem train diffusion`'s arguments.
    Raises InputError for non-square images or a network or schedule the settings cannot build."""
    from medmem.sampling.samplers import schedule_config
    from medmem.models.unet import unet_config
    from medmem.training.diffusion import DiffusionTask

    _, channels, height, width = images.shape
    if height != width:
        raise InputError(f"the diffusion UNet needs square images, got {height}×{width}")
    try:
        unet = unet_config(channels, height, args.base, args.layers, args.mults, args.attention, args.heads,
                           args.dropout)
        schedule = schedule_config(args.timesteps, args.beta_start, args.beta_end)
    except ValueError as exc:
        raise InputError(f"diffusion network: {exc}") from None
    return DiffusionTask(unet, schedule, ctx, batch=args.batch, lr=args.lr, ema=args.ema,
                         ema_warmup=args.ema_warmup, precision=_precision(args, "float32"), snapshot_sampler=args.snapshot_sampler,
                         snapshot_steps=args.snapshot_steps)


def run_training(args) -> Path | None:
    """`medmem train`: DATA_DIR/train.npy (and dataset.json's channel names) in, OUTPUT_DIR's
    checkpoint.pt, log.csv, snapshots/ and network.pt out (see `medmem.training.loop.train`).
    Returns network.pt, or None when a segment (--stop-kimg) ends before the budget. Raises
    InputError for bad input or settings and OutOfTime at a time limit."""
    data_dir = Path(args.data_dir)
    images = open_images(data_dir / "train.npy", "training images")
    info = read_dataset_info(data_dir)
    ctx = distributed.setup(args.device)
    seed_everything(args.seed)
    task = (stylegan2_task if args.model == "stylegan2" else diffusion_task)(images, args, ctx)
    settings = LoopSettings(kimg=args.kimg, batch=args.batch, seed=args.seed, checkpoint_kimg=args.checkpoint_kimg,
                            snapshot_kimg=args.snapshot_kimg, log_kimg=args.log_kimg)
    if args.stop_kimg is not None and args.stop_kimg <= 0:
        raise InputError(f"--stop-kimg must be positive, got {args.stop_kimg}")
    if ctx.main:
        log.info("training %s on %d images %s, %d process(es) on %s, %.1f kimg", task.name, len(images),
                 images.shape[1:], ctx.world_size, ctx.device, args.kimg)
    return train(task, images, args.output_dir, settings, ctx, info.get("channels", ()), TO_UINT8[args.model],
                 progress=not args.no_progress, stop_kimg=args.stop_kimg, resume=args.resume,
                 segment_output=args.segment_output, time_limit_s=time_budget_s(args))


def time_budget_s(args) -> float | None:
    """Seconds this run may train: the job's limit less the margin for start-up and the last
    checkpoint (default 10 % of the limit, at least 1 and at most 15 minutes); None without a limit."""
    if args.time_limit_min is None:
        return None
    if args.time_limit_min <= 0:
        raise InputError(f"--time-limit-min must be positive, got {args.time_limit_min}")
    margin = args.time_margin_min
    if margin is None:
        margin = min(15.0, max(1.0, 0.1 * args.time_limit_min))
    budget = args.time_limit_min - margin
    if budget <= 0:
        raise InputError(f"--time-limit-min {args.time_limit_min} leaves no time after the margin of {margin} min")
    return budget * 60
