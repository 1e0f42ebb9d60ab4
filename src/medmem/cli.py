"""`medmem`: every step of the workflow as a command. Thin: parses arguments, calls one function."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from medmem.errors import InputError


EXIT_OUT_OF_TIME = 75  # EX_TEMPFAIL: stopped before the time limit with a checkpoint; rerunning continues
GPUS_HELP = ("GPUs this job may use: claimed so that concurrent local jobs get different ones "
             "(ignored where CUDA_VISIBLE_DEVICES is already set, as under SLURM)")


def _workers(value: str) -> int:
    n = int(value)
    return n if n > 0 else (os.cpu_count() or 1)


def _add_phantoms(sub) -> None:
    p = sub.add_parser("phantoms", help="write a deterministic embedded dataset in the real file formats")
    kinds = p.add_subparsers(dest="kind", required=True)
    brats = kinds.add_parser("brats", help="BraTS-style NIfTI subjects on MNI152 anatomy")
    brats.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155], metavar=("X", "Y", "Z"),
                       help="volume shape; the field of view stays 240×240×155 mm (default: the real size)")
    brats.add_argument("--release", type=int, choices=[2020, 2021], default=2021,
                       help="2020: BraTS20_Training_NNN/*.nii; 2021: BraTS2021_NNNNN/*.nii.gz")
    cxr = kinds.add_parser("cxr", help="chest radiographs: Kermany JPEGs and RSNA-style DICOM")
    cxr.add_argument("--height", type=int, default=512, help="image height in pixels before preparation")
    for q in (brats, cxr):
        q.add_argument("output_dir")
        q.add_argument("--subjects", type=int, required=True)
        q.add_argument("--seed", type=int, required=True)
        q.add_argument("--workers", type=_workers, default=1, help="processes (0: all cores)")


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="the study's preprocessing: train.npy, holdout.npy, slices.csv")
    kinds = p.add_subparsers(dest="kind", required=True)
    brats = kinds.add_parser("brats", help="a BraTS 2020 or 2021 training release")
    brats.add_argument("--subject-order", help="CSV (subject, split): the study's fixed order and split")
    brats.add_argument("--train", type=int, help="seeded shuffle: number of training subjects")
    brats.add_argument("--holdout", type=int, default=0, help="seeded shuffle: number of held-out subjects")
    cxr = kinds.add_parser("cxr", help="Kermany JPEGs and/or DICOM radiographs")
    cxr.add_argument("--holdout-fraction", type=float, default=0.1, help="share of patients held out")
    cxr.add_argument("--image-level-split", action="store_true",
                     help="split images whose patient is unknown one by one instead of stopping "
                          "(a patient may then be on both sides; recorded in dataset.json)")
    images = kinds.add_parser("images", help="images in any format medmem audit reads (folders, NIfTI, DICOM, arrays)")
    images.add_argument("input_dir", help="the training images: a folder or file")
    images.add_argument("output_dir")
    images.add_argument("--holdout", help="held-out images (real patients the generator never saw): a folder or file")
    images.add_argument("--holdout-fraction", type=float, default=0.0, help="else: share of subjects held out")
    images.add_argument("--seed", type=int, default=0)
    images.add_argument("--channels", nargs="+", help="channels to keep, in order (e.g. T1 FLAIR)")
    images.add_argument("--size", type=int, default=256, help="canvas size for NIfTI slices")
    images.add_argument("--workers", type=_workers, default=1, help="processes (0: all cores)")
    for q in (brats, cxr):
        q.add_argument("input_dir")
        q.add_argument("output_dir")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--size", type=int, default=256, help="output images are size×size")
        q.add_argument("--skip-bad", action="store_true",
                       help="skip a bad subject or image (listed in skipped.csv) instead of stopping")
        q.add_argument("--workers", type=_workers, default=1, help="processes (0: all cores)")


def _add_memorization(sub) -> None:
    p = sub.add_parser("memorization", help="highest Pearson correlation of every query against every training image")
    p.add_argument("train_dir", help="folder with train.npy and slices.csv")
    p.add_argument("queries", nargs="+", help="uint8 N×C×H×W .npy: synthetic samples or real held-out images "
                   "(several: the shards of one set, read in order as one)")
    p.add_argument("output", help="the table (.parquet): one row per query and channel")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
    p.add_argument("--shard", help="i/n (or i-of-n): only the i-th of n equal parts of the queries (0-based)")
    p.add_argument("--precision", choices=["float32", "tf32"],
                   help="screen precision (default: float32 on CPU, tf32 on CUDA); results are exact either way")
    p.add_argument("--block-queries", type=int, help="queries per block (memory: block × C×H×W × 4 bytes)")
    p.add_argument("--block-train", type=int, default=1024, help="training images per block")
    p.add_argument("--cache-gb", default="auto",
                   help="keep normalised training images up to this size (auto: 4 on CPU, half the free GPU memory)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--shift", type=int, default=0,
                   help="also the view 'shift': best r over query translations up to ±SHIFT pixels (0: off)")
    p.add_argument("--flip", action="store_true", help="also the view 'flip': the query and its mirror image")
    p.add_argument("--foreground", action="store_true",
                   help="also the view 'foreground': r over pixels non-zero in either image")
    g = sub.add_parser("memorization-gather", help="join the shard tables of one memorization search")
    g.add_argument("output")
    g.add_argument("shards", nargs="+")
    p = sub.add_parser("plant", help="copies of training images, exact and perturbed, to test the search")
    p.add_argument("train_dir")
    p.add_argument("output", help="planted images (.npy)")
    p.add_argument("manifest", help="which training image each planted image copies (.csv)")
    p.add_argument("--per-perturbation", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--robust", action="store_true",
                   help="also rotate_5deg, crop_resize_90, elastic and partial (tumour pasted into a held-out slice)")
    c = sub.add_parser("calibrate", help="held-out baseline and planted-copy detection rates")
    c.add_argument("data_dir", help="the dataset folder (its slices.csv names the held-out subjects)")
    c.add_argument("holdout", help="memorization table of the held-out images")
    c.add_argument("planted", help="memorization table of the planted copies")
    c.add_argument("manifest", help="the planted copies' manifest")
    c.add_argument("output", help="detection rates (.csv)")
    c.add_argument("--baseline", help="held-out baseline (.csv; default: beside output)")
    c.add_argument("--summary", help="readable summary (.md; default: beside output)")
    c.add_argument("--thresholds", type=float, nargs="+", default=[0.90, 0.95, 0.99])
    c.add_argument("--extra-holdout", nargs="*", default=[], help="more views of the held-out images (tables)")
    c.add_argument("--extra-planted", nargs="*", default=[], help="the same views of the planted copies")
    c.add_argument("--combine", nargs="*", help="views of the combined verdict (default: all views)")
    d = sub.add_parser("detector-train", help="train the copy detector (contrastive encoder) on the training set")
    d.add_argument("train_dir", help="folder with train.npy and slices.csv")
    d.add_argument("output", help="weights (.pt: state dict and config; loads with weights_only=True)")
    d.add_argument("--steps", type=int, default=600)
    d.add_argument("--batch", type=int, default=64)
    d.add_argument("--lr", type=float, default=1e-3)
    d.add_argument("--temperature", type=float, default=0.2)
    d.add_argument("--width", type=int, default=32)
    d.add_argument("--dim", type=int, default=128)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    d.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    e = sub.add_parser("detector-search", help="cosine similarity of detector embeddings: the view 'detector'")
    e.add_argument("train_dir")
    e.add_argument("weights")
    e.add_argument("queries", nargs="+", help="uint8 N×C×H×W .npy (several: the shards of one set, in order)")
    e.add_argument("output", help="the table (.parquet), as medmem memorization writes it")
    e.add_argument("--top-k", type=int, default=5)
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")


def _add_training(sub) -> None:
    p = sub.add_parser("train", help="train a generator (resumes from OUTPUT_DIR/checkpoint.pt)")
    models = p.add_subparsers(dest="model", required=True)
    g = models.add_parser("stylegan2", help="StyleGAN2 (config F) on N-channel images")
    d = models.add_parser("diffusion", help="the study's pixel-space diffusion model (guided-diffusion's UNet)")
    for q in (g, d):  # what the shared training loop takes
        q.add_argument("data_dir", help="folder with train.npy")
        q.add_argument("output_dir", help="checkpoint.pt, network.pt, log.csv, snapshots/")
        q.add_argument("--kimg", type=float, required=True, help="training length in thousands of images shown")
        q.add_argument("--batch", type=int, default=32, help="global minibatch (split over torchrun processes)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--checkpoint-kimg", type=float, default=50.0)
        q.add_argument("--snapshot-kimg", type=float, default=50.0)
        q.add_argument("--log-kimg", type=float, default=4.0)
        q.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        q.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
        q.add_argument("--processes", type=int, default=0,
                       help="data-parallel processes under torchrun (0: one per visible GPU, 1 on CPU)")
        q.add_argument("--precision", choices=["float32", "bf16"],
                       help="bf16: autocast on CUDA (float32 on the CPU); default: bf16 for stylegan2 (regularisation "
                            "passes in float32), float32 for diffusion (the study's)")
        q.add_argument("--no-bf16", action="store_true", help="same as --precision float32")
        q.add_argument("--no-progress", action="store_true")
        q.add_argument("--stop-kimg", type=float,
                       help="end this segment at this many kimg (checkpoint only, no network.pt)")
        q.add_argument("--resume", help="the previous segment's checkpoint (used when OUTPUT_DIR/checkpoint.pt "
                       "is behind it)")
        q.add_argument("--segment-output", help="with --stop-kimg: copy the segment's final checkpoint here")
        q.add_argument("--time-limit-min", type=float,
                       help="the job's wall-time limit: stop before it with a checkpoint (exit status 75; "
                            "rerun to continue)")
        q.add_argument("--time-margin-min", type=float,
                       help="minutes kept free before the limit (default 10 %% of it, 1 to 15)")
    g.add_argument("--r1-gamma", type=float, default=8.0)
    g.add_argument("--channel-base", type=int, default=32768)
    g.add_argument("--channel-max", type=int, default=512)
    g.add_argument("--mapping-layers", type=int, default=8)
    g.add_argument("--z-dim", type=int, default=512, help="z and w dimension")
    g.add_argument("--mbstd-group", type=int, default=4)
    g.add_argument("--ema-rampup", type=float, default=0.05, help="EMA half-life at most this share of the images "
                   "shown (NVlabs' default, the study's: 0.05)")
    g.add_argument("--no-ema-rampup", action="store_true", help="no EMA ramp-up (NVlabs: only when resuming a pickle)")
    g.add_argument("--flip", action="store_true", help="augment with horizontal flips (the study: none)")
    g.add_argument("--translate", type=int, default=0, help="augment with integer shifts up to N pixels")
    d.add_argument("--lr", type=float, default=1e-4)
    d.add_argument("--ema", type=float, default=0.9999, help="EMA decay of the weights used for sampling")
    d.add_argument("--ema-warmup", action="store_true", help="decay at most (1 + step)/(10 + step) (the study: no)")
    d.add_argument("--base", type=int, default=64, help="channels at full resolution")
    d.add_argument("--layers", type=int, default=3, help="residual blocks per level")
    d.add_argument("--mults", type=int, nargs="+", default=[1, 1, 2, 2, 4, 4], help="channel multiplier per level")
    d.add_argument("--attention", type=int, nargs="*", default=[16, 8],
                   help="feature-map sizes with self-attention, as guided-diffusion's --attention_resolutions "
                        "(the study: its default 16 8)")
    d.add_argument("--heads", type=int, default=4)
    d.add_argument("--dropout", type=float, default=0.0)
    d.add_argument("--timesteps", type=int, default=4000)
    d.add_argument("--beta-start", type=float, help="default: 1e-4 × 1000 / timesteps (2.5e-5 at 4,000)")
    d.add_argument("--beta-end", type=float, help="default: 0.02 × 1000 / timesteps (5e-3 at 4,000)")
    d.add_argument("--snapshot-sampler", choices=["ancestral", "ddim", "dpm-solver++"], default="dpm-solver++")
    d.add_argument("--snapshot-steps", type=int, default=25)
    s = sub.add_parser("sample", help="generate uint8 N×C×H×W samples from a trained network")
    s.add_argument("network", help="network.pt written by medmem train")
    s.add_argument("output", help="samples (.npy), with OUTPUT.json and preview grids beside it")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--seed", type=int, default=0, help="first seed: image i uses seed + i")
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--truncation", type=float, default=1.0, help="StyleGAN2: ψ")
    s.add_argument("--noise-mode", choices=["const", "random"], default="const", help="StyleGAN2: noise inputs")
    s.add_argument("--sampler", choices=["ancestral", "ddim", "dpm-solver++"], default="ancestral",
                   help="diffusion: the study's ancestral sampler, or a fast solver")
    s.add_argument("--steps", type=int, help="diffusion: sampler steps (default: every training step)")
    s.add_argument("--raw-weights", action="store_true", help="diffusion: the raw weights instead of the EMA")
    s.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                   help="bf16: autocast on CUDA (float32 on the CPU); recorded in OUTPUT.json")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
    s.add_argument("--channel-names", nargs="*", default=[], help="for the preview grids (default: the network's)")
    s.add_argument("--shard", help="i/n (or i-of-n): write only the i-th of n contiguous parts of the N images "
                   "(0-based; whole batches); image j is always made from seed + j, in the same batch")


def _add_quality(sub) -> None:
    help_weights = ("local torch-fidelity Inception weights (pt_inception-2015-12-05-6726825d.pth); "
                    "default: torch-fidelity's download")
    help_mode = ("auto: record 'not computed' when no weights can be had; required: fail then; off: skip")
    f = sub.add_parser("features", help="Inception features of the training images, per channel (for quality)")
    f.add_argument("images", help="training images (.npy, uint8 N×C×H×W)")
    f.add_argument("output", help="features (.npz)")
    q = sub.add_parser("quality", help="FID, KID and IS of synthetic against training images, per channel")
    q.add_argument("samples", nargs="+", help="synthetic images (.npy, uint8 N×C×H×W; several: the shards of one "
                   "set, read in order as one)")
    q.add_argument("train_features", help="the training images' features (.npz from medmem features)")
    q.add_argument("output", help="metrics (.json)")
    q.add_argument("--kid-subsets", type=int, default=100)
    q.add_argument("--kid-subset-size", type=int, default=1000, help="at most; smaller sets use all their images")
    for p in (f, q):
        p.add_argument("--weights", help=help_weights)
        p.add_argument("--inception", choices=["auto", "required", "off"], default="auto", help=help_mode)
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        p.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
        p.add_argument("--batch", type=int, default=64)
    f.add_argument("--channel-names", nargs="*", help="default: the dataset.json beside the images")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="the study's figures and tables")
    kinds = p.add_subparsers(dest="part", required=True)
    f = kinds.add_parser("figures", help="figures and the summary row of one dataset × model")
    f.add_argument("results", help="the workflow's results folder")
    f.add_argument("dataset")
    f.add_argument("model")
    f.add_argument("output_dir")
    f.add_argument("--top", type=int, default=4, help="samples in the copy-pair figure")
    f.add_argument("--samples", nargs="+", help="the model's sample files, in order (default: "
                   "RESULTS/samples/DATASET/MODEL.npy)")
    f.add_argument("--combine", nargs="*", help="views of the combined verdict (default: all views)")
    s = kinds.add_parser("summary", help="the summary table (CSV, Markdown) and cross-dataset figure")
    s.add_argument("output_dir")
    s.add_argument("rows", nargs="+", help="row.json files from medmem report figures")


def _run_report(args) -> None:
    from medmem.report.run import report_figures, report_summary

    if args.part == "figures":
        report_figures(args.results, args.dataset, args.model, args.output_dir, args.top, args.combine,
                       samples=args.samples)
    else:
        report_summary(args.rows, args.output_dir)


def _run_quality(args) -> None:
    import torch

    from medmem.quality.run import quality, write_train_features

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.command == "features":
        from pathlib import Path

        names = args.channel_names
        if not names and (Path(args.images).parent / "dataset.json").is_file():
            from medmem.io import read_dataset_info

            names = read_dataset_info(Path(args.images).parent).get("channels")
        write_train_features(args.images, args.output, args.weights, args.inception, device, args.batch, names)
    else:
        quality(args.samples, args.train_features, args.output, args.weights, args.inception, device, args.batch,
                args.kid_subsets, args.kid_subset_size)


def _run_training(args) -> None:
    import torch

    if args.command == "train":
        from medmem.training.run import run_training

        run_training(args)
        return
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    from medmem.weights import load_plain

    network = load_plain(args.network, "network", device)
    if not isinstance(network, dict) or network.get("task") not in ("stylegan2", "diffusion"):
        raise InputError(f"{args.network}: not a network written by medmem train")
    needed = ("generator", "weights") if network["task"] == "stylegan2" else ("unet", "schedule", "weights")
    if any(not isinstance(network.get(key), dict) for key in needed):
        raise InputError(f"{args.network}: a {network['task']} network needs {', '.join(needed)}; some are missing")
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    if args.batch < 1:
        raise InputError(f"--batch must be at least 1, got {args.batch}")
    names = args.channel_names or network.get("channel_names", [])
    from medmem.io import file_digest
    from medmem.memorization.run import parse_shard

    i, parts = parse_shard(args.shard)
    # Shards split the fixed grid of batches (images 0..batch-1, batch..2·batch-1, ...): every image is
    # made from its own seed in the same batch whatever the shard count, so the bytes are the same too
    # (batched float arithmetic can differ in the last bit with the batch's composition).
    batches = -(-args.n // args.batch)
    first, stop = i * batches // parts * args.batch, min(args.n, (i + 1) * batches // parts * args.batch)
    if stop <= first:
        raise InputError(f"--shard {args.shard}: {args.n} images make {batches} batches of {args.batch}, fewer "
                         "than the shards; lower --batch or the shard count")
    # a shard is the images first..stop-1 of the whole set: seeds seed+first .. seed+stop-1
    n, seed = stop - first, args.seed + first
    record = {"network_sha256": file_digest(args.network)}
    if parts > 1:
        record.update(shard=f"{i}/{parts}", first_index=first, n_total=args.n)
    if network["task"] == "stylegan2":
        from medmem.sampling.stylegan2 import sample

        sample(network, args.output, n, seed, args.batch, args.truncation, args.noise_mode, device, names,
               args.precision, record=record)
        return
    from medmem.sampling.diffusion import sample

    timesteps = network["schedule"]["timesteps"]
    if args.steps is not None and not 1 <= args.steps <= timesteps:
        raise InputError(f"--steps must be between 1 and the network's {timesteps} timesteps, got {args.steps}")
    sample(network, args.output, n, seed, args.batch, args.sampler, args.steps, device, names,
           "raw_weights" if args.raw_weights else "weights", args.precision, record=record)


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="what a run costs: per rule, jobs × GPUs × estimated hours, and totals")
    p.add_argument("--configfile", default="config/config.yaml", help="the workflow config (as for snakemake)")
    p.add_argument("--images", nargs="+", default=[], metavar="DATASET=TRAIN,HOLDOUT",
                   help="image counts of a dataset (default: its prepared dataset.json, else an estimate)")
    p.add_argument("--figure", nargs="+", default=[], metavar="NAME=VALUE",
                   help="replace a throughput figure: diffusion_tflops, search_tflops, stylegan2_scale")
    p.add_argument("--results", default="results", help="the workflow's results folder (prepared dataset sizes)")


def _key_values(items, option, convert):
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key] = convert(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"{option} {item!r}: expected NAME=VALUE")
    return out


def _run_plan(args) -> None:
    from pathlib import Path

    from medmem.config import load_config
    from medmem.plan import plan_config

    schema = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
    config = load_config(args.configfile, schema, check_paths=False)
    images = _key_values(args.images, "--images", lambda v: tuple(int(x) for x in v.split(",", 1)) if "," in v
                         else int("x"))
    figures = _key_values(args.figure, "--figure", float)
    sys.stdout.write(plan_config(config, Path("."), Path(args.results), images, figures))


def _add_audit(sub) -> None:
    p = sub.add_parser("audit", help="the whole audit of a generator trained elsewhere: one command, one HTML report")
    p.add_argument("train", help="training images: a folder or file (study layout, PNG/JPEG/TIFF, NIfTI, DICOM, "
                   ".npy/.npz)")
    p.add_argument("samples", help="synthetic images, in any of the same formats")
    p.add_argument("output_dir", help="memorization.csv, study_<channel>.csv, audit.html, ...")
    p.add_argument("--holdout", help="real images of patients the generator never saw (the baseline)")
    p.add_argument("--channels", nargs="+", help="channels to audit, in order (e.g. T1 FLAIR), or names for "
                   "unnamed channels")
    p.add_argument("--size", type=int, default=256, help="canvas size for NIfTI slices")
    p.add_argument("--workers", type=_workers, default=1, help="processes reading images (0: all cores)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--planted", type=int, default=16, help="planted copies per perturbation")
    p.add_argument("--pairs", type=int, default=4, help="closest pairs shown per channel")
    p.add_argument("--seed", type=int, default=0, help="which training images are planted")
    p.add_argument("--shift", type=int, default=2, help="the shift view's largest translation in pixels (0: off)")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="without the flip view")
    p.add_argument("--no-foreground", dest="foreground", action="store_false", help="without the foreground view")
    p.add_argument("--no-robust", dest="robust", action="store_false",
                   help="only the study's planted copies (no rotations, crop-and-resize, elastic, partial)")
    p.add_argument("--detector-steps", type=int, default=600,
                   help="training steps of the learned copy detector (0: no detector view)")
    p.add_argument("--combine", nargs="+", default=["all", "flip", "foreground", "detector"],
                   help="views of the combined verdict")


def _run_audit(args) -> None:
    import shlex

    from medmem.audit.run import run_audit

    run_audit(args.train, args.samples, args.output_dir, holdout=args.holdout, channels=args.channels,
              size=args.size, workers=args.workers, device=args.device, top_k=args.top_k,
              per_perturbation=args.planted, seed=args.seed, pairs=args.pairs, shift=args.shift, flip=args.flip,
              foreground=args.foreground, robust=args.robust, detector_steps=args.detector_steps,
              combine=args.combine, command=shlex.join(["medmem", *args.argv]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medmem",
        description="Memorization audit of medical image generators: every step of the workflow "
                    "(the study of Akbar, Wang and Eklund) as a command.")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_phantoms(sub)
    _add_prepare(sub)
    _add_memorization(sub)
    _add_training(sub)
    _add_quality(sub)
    _add_report(sub)
    _add_plan(sub)
    _add_audit(sub)
    return parser


def run(args) -> None:
    if args.command == "phantoms":
        from medmem.data import phantoms

        if args.kind == "brats":
            phantoms.make_brats_phantoms(args.output_dir, args.subjects, args.seed, args.shape,
                                         args.release, args.workers)
        else:
            phantoms.make_cxr_phantoms(args.output_dir, args.subjects, args.seed, args.height, args.workers)
    elif args.command.startswith("memorization"):
        _run_memorization(args)
    elif args.command in ("plant", "calibrate"):
        _run_calibration(args)
    elif args.command.startswith("detector"):
        _run_detector(args)
    elif args.command in ("train", "sample"):
        _run_training(args)
    elif args.command in ("features", "quality"):
        _run_quality(args)
    elif args.command == "report":
        _run_report(args)
    elif args.command == "plan":
        _run_plan(args)
    elif args.command == "audit":
        _run_audit(args)
    elif args.command == "prepare":
        if args.size < 8:
            raise InputError(f"--size must be at least 8, got {args.size}")
        if args.kind == "brats":
            from medmem.data.brats import prepare_brats

            if args.subject_order and args.train is not None:
                raise InputError("give either --subject-order or --train/--holdout, not both")
            prepare_brats(args.input_dir, args.output_dir, subject_order=args.subject_order,
                          n_train=args.train, n_holdout=args.holdout, seed=args.seed, size=args.size,
                          skip_bad=args.skip_bad, workers=args.workers)
        elif args.kind == "images":
            from medmem.audit.images import prepare_images

            prepare_images(args.input_dir, args.output_dir, holdout=args.holdout,
                           holdout_fraction=args.holdout_fraction, seed=args.seed, channels=args.channels,
                           size=args.size, workers=args.workers)
        else:
            from medmem.data.cxr import prepare_cxr

            prepare_cxr(args.input_dir, args.output_dir, holdout_fraction=args.holdout_fraction,
                        seed=args.seed, size=args.size, skip_bad=args.skip_bad, workers=args.workers,
                        image_level=args.image_level_split)


def _run_calibration(args) -> None:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from medmem.io import atomic_output, open_images, write_csv
    from medmem.memorization import calibration, planted
    from medmem.memorization.table import read_table

    if args.command == "plant":
        from medmem.io import read_dataset_info

        train = open_images(Path(args.train_dir) / "train.npy", "training images")
        if args.robust:
            info = read_dataset_info(args.train_dir)
            names = info.get("channels") or []
            seg = names.index("seg") if "seg" in names else None
            holdout_path = Path(args.train_dir) / "holdout.npy"
            recipients = open_images(holdout_path, "held-out images") if holdout_path.is_file() else None
            images, manifest = planted.plant_copies(train, args.per_perturbation, args.seed,
                                                    planted.ALL_PERTURBATIONS, seg_channel=seg,
                                                    recipients=recipients)
        else:
            images, manifest = planted.plant_copies(train, args.per_perturbation, args.seed)
        with atomic_output(args.output) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, images)
        write_csv(manifest, args.manifest)
        return
    slices = pd.read_csv(Path(args.data_dir) / "slices.csv", dtype={"subject": str})
    holdout_subjects = slices[slices["split"] == "holdout"].set_index("index")["subject"]
    holdout, _ = read_table(args.holdout)
    planted_table, _ = read_table(args.planted)
    if len(args.extra_holdout) != len(args.extra_planted):
        raise InputError("--extra-holdout and --extra-planted need one table each per added view set")
    holdout = pd.concat([holdout, *(read_table(p)[0] for p in args.extra_holdout)], ignore_index=True)
    planted_table = pd.concat([planted_table, *(read_table(p)[0] for p in args.extra_planted)], ignore_index=True)
    manifest = pd.read_csv(args.manifest)
    detection, baseline = calibration.calibrate(holdout, holdout_subjects, planted_table, manifest,
                                                tuple(args.thresholds), combine=args.combine)
    output = Path(args.output)
    write_csv(detection, output)
    write_csv(baseline, args.baseline or output.with_name("holdout_baseline.csv"))
    summary = Path(args.summary or output.with_suffix(".md"))
    with atomic_output(summary) as tmp:
        tmp.write_text(calibration.summary_markdown(detection, baseline, Path(args.data_dir).name))


def _run_detector(args) -> None:
    import torch

    from medmem.detector import run as detector

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.command == "detector-train":
        detector.run_train(args.train_dir, args.output, steps=args.steps, batch=args.batch, lr=args.lr,
                           temperature=args.temperature, width=args.width, dim=args.dim, seed=args.seed,
                           device=args.device)
    else:
        detector.run_search(args.train_dir, args.weights, args.queries, args.output, top_k=args.top_k,
                            device=args.device)


def _run_memorization(args) -> None:
    if args.command == "memorization-gather":
        from medmem.memorization.table import gather

        gather(args.shards, args.output)
        return
    import torch

    from medmem.memorization.run import run_memorization

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run_memorization(args.train_dir, args.queries, args.output, top_k=args.top_k, device=args.device,
                     shard=args.shard, precision=args.precision, block_queries=args.block_queries,
                     block_train=args.block_train, cache_gb=args.cache_gb, shift=args.shift, flip=args.flip,
                     foreground=args.foreground)


def _launch_data_parallel(args, argv: list[str]) -> int | None:
    """A training command that should run on several processes re-runs itself under torchrun."""
    import os
    import subprocess

    from medmem.devices import processes_for, torchrun_command

    if args.command != "train" or "WORLD_SIZE" in os.environ:
        return None
    n = processes_for(args.processes, args.device)
    if n <= 1:
        return None
    logging.getLogger("medmem").info("training on %d processes under torchrun", n)
    return subprocess.run(torchrun_command(argv, n)).returncode


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "gpus", 0):
            from medmem.devices import claim_gpus

            claim_gpus(args.gpus)
        code = _launch_data_parallel(args, argv)
        if code is not None:
            return code
        run(args)
    except (InputError, FileExistsError) as exc:
        message = " ".join(str(exc).split())
        print(f"medmem: error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        from medmem.training.loop import OutOfTime

        if not isinstance(exc, OutOfTime):
            raise
        print(f"medmem: {exc}", file=sys.stderr)
        return EXIT_OUT_OF_TIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
