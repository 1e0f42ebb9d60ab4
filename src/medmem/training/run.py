"""`medmem train`: files in, trained network out. The work is in `loop.py` and the model's task."""

from __future__ import annotations

import logging
from pathlib import Path

from medmem.errors import InputError
from medmem.images import TO_UINT8
from medmem.io import dataset_files, open_images, read_dataset_info
from medmem.training import distributed
from medmem.training.loop import LoopSettings, seed_everything, train

log = logging.getLogger(__name__)


def stylegan2_task(images, args: dict, ctx):
    """The StyleGAN2Task for uint8 `images` (N, C, H, W) and the stylegan2 training options (the config
    keys of `$defs.stylegan2` with x-command train, all given). Raises InputError unless H = W is a
    power of two of at least 16."""
    from medmem.training.stylegan2 import StyleGAN2Task

    _, channels, height, width = images.shape
    if height != width or height < 16 or height & (height - 1):
        raise InputError(f"StyleGAN2 needs square power-of-two images of at least 16 pixels, got {height}×{width}")
    common = dict(resolution=height, img_channels=channels, channel_base=args["channel_base"],
                  channel_max=args["channel_max"])
    generator = dict(common, z_dim=args["z_dim"], w_dim=args["z_dim"], mapping_layers=args["mapping_layers"])
    discriminator = dict(common, mbstd_group=args["mbstd_group"])
    return StyleGAN2Task(generator, discriminator, ctx, batch=args["batch"], r1_gamma=args["r1_gamma"],
                         ema_rampup=args["ema_rampup"], flip=args["flip"], translate=args["translate"],
                         precision=args["precision"])


def diffusion_task(images, args: dict, ctx):
    """The DiffusionTask for uint8 `images` (N, C, H, W) and the diffusion training options (the config
    keys of `$defs.diffusion` with x-command train, all given; `flip`, `translate` and the `dp_*` keys
    may be absent: off; `prediction` and `zero_terminal_snr` may be absent: the study's). Raises InputError for non-square images, a network or schedule the settings
    cannot build, or bad DP-SGD settings (`medmem.training.privacy.dp_options`)."""
    from medmem.sampling.samplers import schedule_config
    from medmem.models.unet import unet_config
    from medmem.training.diffusion import DiffusionTask
    from medmem.training.privacy import dp_options, training_steps

    _, channels, height, width = images.shape
    if height != width:
        raise InputError(f"the diffusion UNet needs square images, got {height}×{width}")
    try:
        unet = unet_config(channels, height, args["base"], args["layers"], args["mults"], args["attention"],
                           args["heads"], args["dropout"])
        schedule = schedule_config(args["timesteps"], args["beta_start"], args["beta_end"],
                                   args.get("prediction", "epsilon"), args.get("zero_terminal_snr", False))
    except ValueError as exc:
        raise InputError(f"diffusion network: {exc}") from None
    dp = dp_options(args, len(images), args["batch"])
    return DiffusionTask(unet, schedule, ctx, batch=args["batch"], lr=args["lr"], ema=args["ema"],
                         ema_warmup=args["ema_warmup"], precision=args["precision"],
                         snapshot_sampler=args["snapshot_sampler"], snapshot_steps=args["snapshot_steps"],
                         flip=args.get("flip", False), translate=args.get("translate", 0), dp=dp,
                         n_train=len(images), steps=training_steps(args["kimg"], args["batch"]))


def run_training(model: str, train_path, output_dir, options: dict, *, info=None, device: str = "auto",
                 progress: bool = True, stop_kimg: float | None = None, resume=None, segment_output=None,
                 time_limit_min: float | None = None, time_margin_min: float | None = None) -> Path | None:
    """`medmem train`: train `model` ('stylegan2' or 'diffusion') on `train_path` (train.npy, uint8
    N×C×H×W, or its folder) into `output_dir`: checkpoint.pt, log.csv, snapshots/ and network.pt (see
    `medmem.training.loop.train`).

    `options`: the type's training keys (schema `$defs.<model>`, x-command train), all given. `info`:
    dataset.json (channel names; default beside train.npy). `stop_kimg`: end a segment there (its
    checkpoint copied to `segment_output`); `time_limit_min`: stop before it with a checkpoint. Returns
    network.pt, or None when a segment ends before the budget. Raises InputError for bad input or
    settings and OutOfTime at a time limit.
    """
    files = dataset_files(train_path, info=info)
    images = open_images(files.train, "training images")
    info = read_dataset_info(files.info)
    args = options
    ctx = distributed.setup(device)
    seed_everything(args["seed"])
    task = (stylegan2_task if model == "stylegan2" else diffusion_task)(images, args, ctx)
    settings = LoopSettings(kimg=args["kimg"], batch=args["batch"], seed=args["seed"],
                            checkpoint_kimg=args["checkpoint_kimg"], snapshot_kimg=args["snapshot_kimg"],
                            log_kimg=args["log_kimg"], keep_kimg=tuple(args.get("keep_kimg") or ()))
    if stop_kimg is not None and stop_kimg <= 0:
        raise InputError(f"--stop-kimg must be positive, got {stop_kimg}")
    if ctx.main:
        log.info("training %s on %d images %s, %d process(es) on %s, %.1f kimg", task.name, len(images),
                 images.shape[1:], ctx.world_size, ctx.device, args["kimg"])
    return train(task, images, output_dir, settings, ctx, info.get("channels", ()), TO_UINT8[model],
                 progress=progress, stop_kimg=stop_kimg, resume=resume, segment_output=segment_output,
                 time_limit_s=time_budget_s(time_limit_min, time_margin_min))


def time_budget_s(time_limit_min: float | None, time_margin_min: float | None = None) -> float | None:
    """Seconds this run may train: the job's limit less the margin for start-up and the last
    checkpoint (default 10 % of the limit, at least 1 and at most 15 minutes); None without a limit."""
    if time_limit_min is None:
        return None
    if time_limit_min <= 0:
        raise InputError(f"--time-limit-min must be positive, got {time_limit_min}")
    margin = time_margin_min
    if margin is None:
        margin = min(15.0, max(1.0, 0.1 * time_limit_min))
    budget = time_limit_min - margin
    if budget <= 0:
        raise InputError(f"--time-limit-min {time_limit_min} leaves no time after the margin of {margin} min")
    return budget * 60
