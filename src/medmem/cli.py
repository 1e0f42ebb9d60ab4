"""`medmem`: every step of the workflow as a command.

Parses arguments and calls one function of the stage's package. The options that are workflow config
keys, with their types, choices and defaults, are made from the workflow schema (`medmem.params`), so
a command run by hand and the same step run by Snakemake agree.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from medmem import params
from medmem.errors import InputError

EXIT_OUT_OF_TIME = 75  # EX_TEMPFAIL: stopped before the time limit with a checkpoint; rerunning continues
GPUS_HELP = ("GPUs this job may use: claimed so that concurrent local jobs get different ones "
             "(ignored where CUDA_VISIBLE_DEVICES is already set, as under SLURM)")
DATA_HELP = "the training images: train.npy (or the prepared dataset's folder holding it)"


def _workers(value: str) -> int:
    n = int(value)
    return n if n > 0 else (os.cpu_count() or 1)


def _dataset_files(p, slices: bool = True) -> None:
    """--slices and --info: a prepared dataset's files, by default beside train.npy."""
    if slices:
        p.add_argument("--slices", help="the dataset's slices.csv (default: beside train.npy)")
    p.add_argument("--info", help="the dataset's dataset.json (default: beside train.npy)")


def _threads(p) -> None:
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")


def _set_threads(n: int) -> None:
    if n > 0:
        import torch

        torch.set_num_threads(n)


def _add_phantoms(sub) -> None:
    p = sub.add_parser("phantoms", help="write a deterministic embedded dataset in the real file formats")
    kinds = p.add_subparsers(dest="kind", required=True)
    default = params.dataset_default
    brats = kinds.add_parser("brats", help="BraTS-style NIfTI subjects on MNI152 anatomy")
    brats.add_argument("--shape", type=int, nargs=3, default=default("brats", "phantom", "shape"),
                       metavar=("X", "Y", "Z"), help="volume shape; the field of view stays 240×240×155 mm")
    brats.add_argument("--release", type=int, choices=[2020, 2021], default=default("brats", "phantom", "release"),
                       help="2020: BraTS20_Training_NNN/*.nii; 2021: BraTS2021_NNNNN/*.nii.gz")
    brats.set_defaults(func=lambda a: _phantoms().make_brats_phantoms(a.output_dir, a.subjects, a.seed, a.shape,
                                                                      a.release, a.workers))
    cxr = kinds.add_parser("cxr", help="chest radiographs: Kermany JPEGs and RSNA-style DICOM")
    cxr.add_argument("--height", type=int, default=default("cxr", "phantom", "height"),
                     help="image height in pixels before preparation")
    cxr.set_defaults(func=lambda a: _phantoms().make_cxr_phantoms(a.output_dir, a.subjects, a.seed, a.height,
                                                                  a.workers))
    for q, kind in ((brats, "brats"), (cxr, "cxr")):
        q.add_argument("output_dir")
        q.add_argument("--subjects", type=int, default=default(kind, "phantom", "subjects"))
        q.add_argument("--seed", type=int, default=default(kind, "phantom", "seed"))
        q.add_argument("--workers", type=_workers, default=1, help="processes (0: all cores)")


def _phantoms():
    from medmem.data import phantoms

    return phantoms


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="the study's preprocessing: train.npy, holdout.npy, slices.csv")
    kinds = p.add_subparsers(dest="kind", required=True)
    default = params.dataset_default
    brats = kinds.add_parser("brats", help="a BraTS 2020 or 2021 training release")
    brats.add_argument("--subject-order", help="CSV (subject, split): the study's fixed order and split")
    brats.add_argument("--train", type=int, help="seeded shuffle: number of training subjects")
    brats.add_argument("--holdout", type=int, default=0, help="seeded shuffle: number of held-out subjects")
    brats.set_defaults(func=_prepare_brats)
    cxr = kinds.add_parser("cxr", help="Kermany JPEGs and/or DICOM radiographs")
    cxr.add_argument("--holdout-fraction", type=float, default=default("cxr", "split", "holdout_fraction"),
                     help="share of patients held out")
    cxr.add_argument("--image-level-split", action="store_true",
                     help="split images whose patient is unknown one by one instead of stopping "
                          "(a patient may then be on both sides; recorded in dataset.json)")
    cxr.set_defaults(func=_prepare_cxr)
    images = kinds.add_parser("images", help="images in any format medmem audit reads (folders, NIfTI, DICOM, arrays)")
    images.add_argument("--holdout", help="held-out images (real patients the generator never saw): a folder or file")
    images.add_argument("--holdout-fraction", type=float, default=default("images", "split", "holdout_fraction"),
                        help="else: share of subjects held out")
    images.add_argument("--channels", nargs="+", help="channels to keep, in order (e.g. T1 FLAIR)")
    images.set_defaults(func=_prepare_images)
    for q, kind in ((brats, "brats"), (cxr, "cxr"), (images, "images")):
        q.add_argument("input_dir", help="the dataset: a folder (kind images: a folder or file)")
        q.add_argument("output_dir")
        q.add_argument("--seed", type=int, default=default(kind, "split", "seed"))
        q.add_argument("--size", type=int, default=default(kind, "size"),
                       help="output images are size×size (NIfTI slices padded or cropped, never resampled)")
        q.add_argument("--workers", type=_workers, default=1, help="processes (0: all cores)")
        if kind != "images":
            q.add_argument("--skip-bad", action="store_true",
                           help="skip a bad subject or image (listed in skipped.csv) instead of stopping")


def _check_size(size: int) -> None:
    if size < 8:
        raise InputError(f"--size must be at least 8, got {size}")


def _prepare_brats(a) -> None:
    from medmem.data.brats import prepare_brats

    _check_size(a.size)
    if a.subject_order and a.train is not None:
        raise InputError("give either --subject-order or --train/--holdout, not both")
    prepare_brats(a.input_dir, a.output_dir, subject_order=a.subject_order, n_train=a.train, n_holdout=a.holdout,
                  seed=a.seed, size=a.size, skip_bad=a.skip_bad, workers=a.workers)


def _prepare_cxr(a) -> None:
    from medmem.data.cxr import prepare_cxr

    _check_size(a.size)
    prepare_cxr(a.input_dir, a.output_dir, holdout_fraction=a.holdout_fraction, seed=a.seed, size=a.size,
                skip_bad=a.skip_bad, workers=a.workers, image_level=a.image_level_split)


def _prepare_images(a) -> None:
    from medmem.audit.images import prepare_images

    _check_size(a.size)
    prepare_images(a.input_dir, a.output_dir, holdout=a.holdout, holdout_fraction=a.holdout_fraction, seed=a.seed,
                   channels=a.channels, size=a.size, workers=a.workers)


def _add_subset(sub) -> None:
    p = sub.add_parser("subset", help="a prepared dataset's first N training subjects, its held-out images unchanged")
    p.add_argument("train", help="the parent dataset's train.npy (or its prepared folder)")
    p.add_argument("output_dir", help="the subset's folder: train.npy, holdout.npy, slices.csv, dataset.json")
    p.add_argument("--train-subjects", type=int, required=True,
                   help="training subjects (chest x-rays: patients) kept, the first in the parent's split order")
    _dataset_files(p)
    p.add_argument("--holdout", help="the parent's holdout.npy (default: beside train.npy); copied unchanged")
    p.add_argument("--parent", help="the parent dataset's name in dataset.json (default: train.npy's folder name)")
    p.set_defaults(func=lambda a: _subset().make_subset(a.train, a.output_dir, a.train_subjects, slices=a.slices,
                                                        info=a.info, holdout=a.holdout, parent=a.parent))


def _subset():
    from medmem.data import subset

    return subset


def _add_memorization(sub) -> None:
    memorization = params.node("memorization")
    p = sub.add_parser("memorization", help="highest Pearson correlation of every query against every training image")
    p.add_argument("train", help=DATA_HELP)
    p.add_argument("queries", nargs="+", help="uint8 N×C×H×W .npy: synthetic samples or real held-out images "
                   "(several: the shards of one set, read in order as one)")
    p.add_argument("output", help="the table (.parquet): one row per query and view")
    _dataset_files(p)
    params.add_options(p, memorization, "memorization")
    p.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
    p.add_argument("--shard", help="i/n (or i-of-n): only the i-th of n equal parts of the queries (0-based)")
    p.add_argument("--block-queries", type=int, help="queries per block (memory: block × C×H×W × 4 bytes)")
    _threads(p)
    p.set_defaults(func=_memorization)

    g = sub.add_parser("memorization-gather", help="join the shard tables of one memorization search")
    g.add_argument("output")
    g.add_argument("shards", nargs="+")
    g.set_defaults(func=lambda a: _table().gather(a.shards, a.output))

    p = sub.add_parser("plant", help="copies of training images, exact and perturbed, to test the search")
    p.add_argument("train", help=DATA_HELP)
    p.add_argument("output", help="planted images (.npy)")
    p.add_argument("manifest", help="which training image each planted image copies (.csv)")
    p.add_argument("--holdout-images", help="held-out images, the recipients of the partial copies "
                   "(default: holdout.npy beside train.npy, if there)")
    _dataset_files(p, slices=False)
    params.add_options(p, params.node("memorization.planted"), "plant")
    p.set_defaults(func=lambda a: _planted().run_plant(
        a.train, a.output, a.manifest, per_perturbation=a.per_perturbation, seed=a.seed, robust=a.robust,
        holdout_images=a.holdout_images, info=a.info))

    c = sub.add_parser("calibrate", help="held-out baseline and planted-copy detection rates")
    c.add_argument("slices", help="the dataset's slices.csv (or its folder): names the held-out subjects")
    c.add_argument("holdout", help="memorization table of the held-out images")
    c.add_argument("planted", help="memorization table of the planted copies")
    c.add_argument("manifest", help="the planted copies' manifest")
    c.add_argument("output", help="detection rates (.csv)")
    c.add_argument("--baseline", help="held-out baseline (.csv; default: beside output)")
    c.add_argument("--summary", help="readable summary (.md; default: beside output)")
    c.add_argument("--dataset", help="the dataset's name in the summary (default: the slices' folder name)")
    c.add_argument("--extra-holdout", nargs="*", default=[], help="more views of the held-out images (tables)")
    c.add_argument("--extra-planted", nargs="*", default=[], help="the same views of the planted copies")
    params.add_options(c, memorization, "calibrate")
    c.set_defaults(func=lambda a: _calibration().run_calibrate(
        a.slices, a.holdout, a.planted, a.manifest, a.output, baseline=a.baseline, summary=a.summary,
        dataset=a.dataset, extra_holdout=a.extra_holdout, extra_planted=a.extra_planted,
        thresholds=a.thresholds, combine=a.combine))

    d = sub.add_parser("detector-train", help="train the copy detector (contrastive encoder) on the training set")
    d.add_argument("train", help=DATA_HELP)
    d.add_argument("output", help="weights (.pt: state dict and config; loads with weights_only=True)")
    _dataset_files(d)
    params.add_options(d, params.node("memorization.detector"), "detector-train")
    params.add_options(d, memorization, "detector-train")
    _threads(d)
    d.set_defaults(func=_detector_train)
    e = sub.add_parser("detector-search", help="cosine similarity of detector embeddings: the view 'detector'")
    e.add_argument("train", help=DATA_HELP)
    e.add_argument("weights")
    e.add_argument("queries", nargs="+", help="uint8 N×C×H×W .npy (several: the shards of one set, in order)")
    e.add_argument("output", help="the table (.parquet), as medmem memorization writes it")
    _dataset_files(e)
    params.add_options(e, memorization, "detector-search")
    _threads(e)
    e.set_defaults(func=_detector_search)


def _table():
    from medmem.memorization import table

    return table


def _planted():
    from medmem.memorization import planted

    return planted


def _calibration():
    from medmem.memorization import calibration

    return calibration


def _detector():
    from medmem.detector import run

    return run


def _detector_train(a) -> None:
    _set_threads(a.threads)
    _detector().run_train(a.train, a.output, steps=a.steps, batch=a.batch, lr=a.lr, temperature=a.temperature,
                          width=a.width, dim=a.dim, seed=a.seed, device=a.device, slices=a.slices, info=a.info)


def _detector_search(a) -> None:
    _set_threads(a.threads)
    _detector().run_search(a.train, a.weights, a.queries, a.output, top_k=a.top_k, device=a.device,
                           slices=a.slices, info=a.info)


def _memorization(a) -> None:
    from medmem.memorization.run import run_memorization

    _set_threads(a.threads)
    run_memorization(a.train, a.queries, a.output, top_k=a.top_k, device=a.device, shard=a.shard,
                     precision=a.precision, block_queries=a.block_queries, block_train=a.block_train,
                     cache_gb=a.cache_gb, shift=a.shift, flip=a.flip, foreground=a.foreground, slices=a.slices,
                     info=a.info)


def _add_training(sub) -> None:
    p = sub.add_parser("train", help="train a generator (resumes from OUTPUT_DIR/checkpoint.pt)")
    models = p.add_subparsers(dest="model", required=True)
    helps = {"stylegan2": "StyleGAN2 (config F) on N-channel images",
             "diffusion": "the study's pixel-space diffusion model (guided-diffusion's UNet)"}
    for model, text in helps.items():
        q = models.add_parser(model, help=text)
        q.add_argument("train", help=DATA_HELP)
        q.add_argument("output_dir", help="checkpoint.pt, network.pt, log.csv, snapshots/")
        q.add_argument("--info", help="the dataset's dataset.json: channel names (default: beside train.npy)")
        params.add_options(q, params.node(f"$defs.{model}"), "train")
        q.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        q.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
        q.add_argument("--processes", type=int, default=0,
                       help="data-parallel processes under torchrun (0: one per visible GPU, 1 on CPU)")
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
        q.set_defaults(func=_train)

    s = sub.add_parser("sample", help="generate uint8 N×C×H×W samples from a trained network")
    s.add_argument("network", help="network.pt written by medmem train")
    s.add_argument("output", help="samples (.npy), with OUTPUT.json and preview grids beside it")
    for model in ("stylegan2", "diffusion"):  # defaults: the network's type's (filled in by _sample)
        params.add_options(s, params.node(f"$defs.{model}"), "sample", with_defaults=False)
    s.add_argument("--raw-weights", action="store_true", help="diffusion: the raw weights instead of the EMA")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
    s.add_argument("--channel-names", nargs="*", default=[], help="for the preview grids (default: the network's)")
    s.add_argument("--shard", help="i/n (or i-of-n): write only the i-th of n contiguous parts of the N images "
                   "(0-based; whole batches); image j is always made from seed + j, in the same batch")
    s.set_defaults(func=_sample)

    i = sub.add_parser("import-samples", help="a generator's samples made elsewhere, as the workflow's .npy")
    i.add_argument("source", help="a folder or file in any format medmem audit reads")
    i.add_argument("output", help="samples (.npy), with OUTPUT.json (where they came from) and OUTPUT.csv (names)")
    i.add_argument("--info", required=True, help="the training set's dataset.json: channels and size to match")
    i.add_argument("--workers", type=_workers, default=1, help="processes reading images (0: all cores)")
    i.set_defaults(func=lambda a: _audit_images().import_samples(a.source, a.output, info=a.info,
                                                                 workers=a.workers))


def _audit_images():
    from medmem.audit import images

    return images


def _train(a) -> None:
    from medmem.training.run import run_training

    block = params.node(f"$defs.{a.model}")
    options = {key: getattr(a, key) for key in params.keys(block, "train")}
    run_training(a.model, a.train, a.output_dir, options, info=a.info, device=a.device,
                 progress=not a.no_progress, stop_kimg=a.stop_kimg, resume=a.resume,
                 segment_output=a.segment_output, time_limit_min=a.time_limit_min,
                 time_margin_min=a.time_margin_min)


def _sample(a) -> None:
    from medmem.sampling.run import load_network, run_sample

    network = load_network(a.network, a.device)
    params.fill_defaults(a, params.node(f"$defs.{network['task']}"), "sample")
    run_sample(network, a.network, a.output, n=a.n, seed=a.seed, batch=a.batch, precision=a.precision,
               truncation=a.truncation, noise_mode=a.noise_mode, sampler=a.sampler, steps=a.steps,
               raw_weights=a.raw_weights, channel_names=a.channel_names, shard=a.shard, device=a.device)


def _add_quality(sub) -> None:
    quality = params.node("quality")
    f = sub.add_parser("features", help="Inception features of the training images, per channel (for quality)")
    f.add_argument("images", help="training images (.npy, uint8 N×C×H×W)")
    f.add_argument("output", help="features (.npz)")
    f.add_argument("--info", help="the dataset's dataset.json: channel names (default: beside the images)")
    f.add_argument("--channel-names", nargs="*", help="instead of --info")
    params.add_options(f, quality, "features")
    f.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
    f.set_defaults(func=lambda a: _quality().write_train_features(
        a.images, a.output, a.weights, a.inception, a.device, a.batch, a.channel_names, info=a.info))
    q = sub.add_parser("quality", help="FID, KID and IS of synthetic against training images, per channel")
    q.add_argument("samples", nargs="+", help="synthetic images (.npy, uint8 N×C×H×W; several: the shards of one "
                   "set, read in order as one)")
    q.add_argument("train_features", help="the training images' features (.npz from medmem features)")
    q.add_argument("output", help="metrics (.json)")
    params.add_options(q, quality, "quality")
    q.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
    q.add_argument("--encoder", help="the copy detector's weights (detector.pt): also FD and KID in its feature space")
    q.add_argument("--train", help="with --encoder: the training images it was trained on (train.npy; slices.csv "
                   "beside it)")
    q.set_defaults(func=lambda a: _quality().quality(
        a.samples, a.train_features, a.output, a.weights, a.inception, a.device, a.batch, a.kid_subsets,
        a.kid_subset_size, encoder=a.encoder, encoder_train=a.train))


def _quality():
    from medmem.quality import run

    return run


def _add_report(sub) -> None:
    memorization = params.node("memorization")
    p = sub.add_parser("report", help="the study's figures and tables")
    kinds = p.add_subparsers(dest="part", required=True)
    f = kinds.add_parser("figures", help="figures and the summary row of one dataset × generator")
    f.add_argument("--dataset", required=True, help="the dataset's name")
    f.add_argument("--model", required=True, help="the generator's name")
    f.add_argument("--label", help="the generator's name in titles and tables (default: --model)")
    f.add_argument("--type", default="", help="the generator's type (stylegan2, diffusion, external)")
    inputs = {"table": "the samples' memorization table (.parquet)",
              "holdout": "the held-out images' memorization table (.parquet)",
              "baseline": "holdout_baseline.csv from medmem calibrate", "calibration": "calibration.csv",
              "quality": "the samples' quality metrics (.json)", "train": "the training images (train.npy)",
              "slices": "the dataset's slices.csv", "info": "the dataset's dataset.json"}
    for name, text in inputs.items():
        f.add_argument(f"--{name}", required=True, help=text)
    f.add_argument("--samples", nargs="+", required=True, help="the generator's sample files, in order (its shards)")
    f.add_argument("--sampling", help="the samples' .json record (sampler; default: beside the first sample file)")
    f.add_argument("--curve", help="the training log.csv (none: a generator trained elsewhere)")
    f.add_argument("--detector", help="the samples' table of the learned detector's view")
    f.add_argument("--detector-holdout", help="the held-out images' table of the detector's view")
    outputs = {"histogram_figure": "histogram.png", "pairs_figure": "pairs.png", "samples_figure": "samples.png",
               "training_figure": "training.png", "view_pairs_figure": "view_pairs.png", "flags": "flags.csv",
               "row": "row.json (the summary row)"}
    for name, text in outputs.items():
        f.add_argument(f"--{name.replace('_', '-')}", required=True, help=f"output: {text}")
    f.add_argument("--top", type=int, default=4, help="samples in the copy-pair figure")
    params.add_options(f, memorization, "report figures")
    f.set_defaults(func=_report_figures)
    s = kinds.add_parser("summary", help="the summary table (CSV, Markdown) and cross-dataset figure")
    s.add_argument("table", help="output: summary.csv")
    s.add_argument("markdown", help="output: summary.md")
    s.add_argument("figure", help="output: summary.png")
    s.add_argument("rows", nargs="+", help="row.json files from medmem report figures")
    s.set_defaults(func=lambda a: _report().report_summary(a.rows, a.table, a.markdown, a.figure))
    e = kinds.add_parser("experiment", help="one experiment's figure, table and finding from its generators' rows")
    e.add_argument("name", help="the experiment's name (config key experiment.name)")
    e.add_argument("--axis", default="", help="the x axis label (config key experiment.axis)")
    e.add_argument("--rows", nargs="+", required=True, help="row.json files from medmem report figures")
    e.add_argument("--x", nargs="+", required=True, help="each row's x value, in the order of --rows "
                   "(numbers, or texts taken as categories in this order)")
    e.add_argument("--figure", required=True, help="output: the figure (.png)")
    e.add_argument("--table", required=True, help="output: the table (.csv)")
    e.add_argument("--markdown", required=True, help="output: the table and finding (.md)")
    e.set_defaults(func=lambda a: print(_experiment().report_experiment(a.name, a.axis, a.rows, a.x, a.figure,
                                                                         a.table, a.markdown)))


def _experiment():
    from medmem.report import experiment

    return experiment


def _report():
    from medmem.report import run

    return run


def _report_figures(a) -> None:
    names = ["table", "holdout", "baseline", "calibration", "quality", "samples", "sampling", "train", "slices",
             "info", "curve", "detector", "detector_holdout"]
    outputs = ["histogram_figure", "pairs_figure", "samples_figure", "training_figure", "view_pairs_figure", "flags",
               "row"]
    _report().report_figures(a.dataset, a.model, inputs={n: getattr(a, n) for n in names},
                             outputs={n: getattr(a, n) for n in outputs}, label=a.label, model_type=a.type,
                             top=a.top, thresholds=a.thresholds, combine=a.combine)


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="what a run costs: per rule, jobs × GPUs × estimated hours, and totals")
    p.add_argument("--configfile", default="config/config.yaml", help="the workflow config (as for snakemake)")
    p.add_argument("--images", nargs="+", default=[], metavar="DATASET=TRAIN,HOLDOUT",
                   help="image counts of a dataset (default: its prepared dataset.json, else an estimate)")
    p.add_argument("--figure", nargs="+", default=[], metavar="NAME=VALUE",
                   help="replace a throughput figure: diffusion_tflops, search_tflops, stylegan2_scale")
    p.add_argument("--results", default="results", help="the workflow's results folder (prepared dataset sizes)")
    p.set_defaults(func=_plan)


def _plan(a) -> None:
    from medmem.plan import run_plan

    sys.stdout.write(run_plan(a.configfile, a.results, images=a.images, figures=a.figure))


def _add_audit(sub) -> None:
    memorization = params.node("memorization")
    planted = params.node("memorization.planted")
    detector = params.node("memorization.detector")
    p = sub.add_parser("audit", help="the whole audit of a generator trained elsewhere: one command, one HTML report")
    p.add_argument("train", help="training images: a folder or file (study layout, PNG/JPEG/TIFF, NIfTI, DICOM, "
                   ".npy/.npz)")
    p.add_argument("samples", help="synthetic images, in any of the same formats")
    p.add_argument("output_dir", help="memorization.csv, study_<channel>.csv, audit.html, ...")
    p.add_argument("--holdout", help="real images of patients the generator never saw (the baseline)")
    p.add_argument("--channels", nargs="+", help="channels to audit, in order (e.g. T1 FLAIR), or names for "
                   "unnamed channels")
    p.add_argument("--size", type=int, default=params.dataset_default("images", "size"),
                   help="canvas size for NIfTI slices")
    p.add_argument("--workers", type=_workers, default=1, help="processes reading images (0: all cores)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    params.add_options(p, memorization, "audit")
    p.add_argument("--planted", type=int, default=params.default(planted, "per_perturbation"),
                   help="planted copies per perturbation")
    p.add_argument("--pairs", type=int, default=4, help="closest pairs shown per channel")
    p.add_argument("--seed", type=int, default=params.default(planted, "seed"), help="which training images are planted")
    p.add_argument("--robust", action=argparse.BooleanOptionalAction, default=params.default(planted, "robust"),
                   help="also rotations, crop-and-resize, elastic and partial copies (--no-robust: the study's only)")
    p.add_argument("--detector-steps", type=int, default=params.default(detector, "steps"),
                   help="training steps of the learned copy detector (0: no detector view)")
    p.set_defaults(func=_audit)


def _audit(a) -> None:
    from medmem.audit.run import run_audit

    run_audit(a.train, a.samples, a.output_dir, holdout=a.holdout, channels=a.channels, size=a.size,
              workers=a.workers, device=a.device, top_k=a.top_k, per_perturbation=a.planted, seed=a.seed,
              pairs=a.pairs, shift=a.shift, flip=a.flip, foreground=a.foreground, robust=a.robust,
              detector_steps=a.detector_steps, thresholds=a.thresholds, combine=a.combine,
              command=shlex.join(["medmem", *a.argv]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medmem",
        description="Memorization audit of medical image generators: every step of the workflow "
                    "(the study of Akbar, Wang and Eklund) as a command.")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_phantoms, _add_prepare, _add_subset, _add_memorization, _add_training, _add_quality, _add_report,
                _add_plan, _add_audit):
        add(sub)
    return parser


def _launch_data_parallel(args, argv: list[str]) -> int | None:
    """A training command that should run on several processes re-runs itself under torchrun."""
    import subprocess

    from medmem.devices import processes_for, torchrun_command

    if args.command != "train" or "WORLD_SIZE" in os.environ:
        return None
    n = processes_for(args.processes, args.device)
    if n <= 1:
        return None
    logging.getLogger("medmem").info("training on %d processes under torchrun", n)
    return subprocess.run(torchrun_command(argv, n)).returncode


def _slow_progress_off_terminal() -> None:
    """Progress bars redraw every 0.1 s; written to a log file or a pipe (a batch job, a rule's log)
    that is thousands of updates, so there they redraw at most once a minute (the maximum interval
    too: at tqdm's 10 s its monitor thread forces extra redraws). tqdm reads TQDM_* when it is
    imported, so this runs before any stage module loads; values the user set are kept."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "60")
        os.environ.setdefault("TQDM_MAXINTERVAL", "60")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _slow_progress_off_terminal()
    try:
        args = build_parser().parse_args(argv)
    except InputError as exc:  # e.g. the workflow schema is missing
        print(f"medmem: error: {exc}", file=sys.stderr)
        return 2
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
        args.func(args)
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
