#!/usr/bin/env bash
# One prepared run on a GPU machine: measures throughput (the exact search, StyleGAN2, the diffusion
# UNet, torch.compile) and validates the CUDA paths (bf16 autocast, channels_last, torchrun over the
# visible GPUs, segments, time limits, shards, a killed and resumed sampling, the workflow on local
# GPUs), with config/miniature.yaml timed end to end beside the path checks (issue 17).
#   bash benchmarks/gpu_check.sh [OUT_DIR] [all|benchmarks|checks]
# Each part is sized for one 10-minute device call (on one H200 the three benchmarks before
# torch.compile took 4.5 minutes; the whole check did not fit one call); `all` runs both.
# MINIATURE=0 leaves the miniature out.
set -uo pipefail
out=${1:-gpu-check}
part=${2:-all}
case "$part" in
  all|benchmarks|checks) ;;
  *) echo "gpu_check: unknown part '$part' (all, benchmarks or checks)" >&2; exit 2 ;;
esac
# No GPU, nothing to check: say so and stop before writing anything.
if ! nvidia-smi -L > /dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi -L failed); this script only runs on a GPU machine" >&2
  exit 2
fi
mkdir -p "$out"
run() { echo "== $*"; timeout -s KILL "${LIMIT:-150}" "$@" 2>&1 | tail -n 12; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
if [ "$part" != checks ]; then
# the issue's GPU target, measured: 100,000 uint8 queries × 30,000 training images of 256×256, one channel
LIMIT=300 run python benchmarks/bench_memorization.py --device cuda --queries 100000 --train 30000 --repeats 2 \
  --loop-pairs 50 --numpy-queries 1024 | tee "$out/memorization.txt"
run python benchmarks/bench_stylegan2.py --device cuda --steps 16 | tee "$out/stylegan2.txt"
run python benchmarks/bench_diffusion.py --device cuda --steps 5 | tee "$out/diffusion.txt"
LIMIT=240 run python benchmarks/bench_diffusion.py --device cuda --steps 5 --compile | tee "$out/diffusion_compile.txt"
fi
if [ "$part" != benchmarks ]; then
# The miniature study on this GPU, in the background beside the path checks (which share the GPU with
# it, so its wall time is an upper bound; the throughput figures run before it, alone). It runs from a copy
# of the checkout, with two thirds of the cores; the GPU rules claim none (gpu: 0), so all share GPU 0.
if [ "${MINIATURE:-1}" = 1 ]; then
  mini="$out/miniature"
  rm -rf "$mini" && mkdir -p "$mini" && cp -r Snakefile config workflow src "$mini"/
  (cd "$mini" && t0=$(date +%s) && timeout -s KILL "${MINIATURE_LIMIT:-420}" snakemake --cores $(( $(nproc) * 2 / 3 )) \
     --configfile config/miniature.yaml > ../miniature.log 2>&1
   echo "miniature on this GPU: exit $?, $(( $(date +%s) - t0 )) s wall" | tee -a ../miniature.log) &
  mini_pid=$!
fi
# the workflow's own commands on CUDA: a short diffusion training under torchrun, then sampling
python - "$out" <<'PY'
import sys
import numpy as np
from medmem.data.writer import DatasetWriter
w = DatasetWriter(f"{sys.argv[1]}/data", ["a", "b"], 64, "brats", [])
w.add("train", np.random.default_rng(0).integers(0, 256, (256, 2, 64, 64), dtype=np.uint8),
      [{"subject": f"s{i}", "slice": 0} for i in range(256)])
w.commit()
PY
run medmem train diffusion "$out/data" "$out/train" --kimg 2 --batch 64 --base 32 --mults 1 2 2 2 \
  --attention 16 --timesteps 1000 --checkpoint-kimg 1 --snapshot-kimg 2 --log-kimg 0.5 --no-progress
cat "$out/train/log.csv" 2>/dev/null
run medmem sample "$out/train/network.pt" "$out/samples.npy" --n 256 --batch 128 --sampler dpm-solver++ --steps 25
# training in segments on CUDA (the workflow's segment_kimg chain): two segment jobs, then the final one,
# beside the one-job run above; and a time limit that stops a long run with its checkpoint (exit 75)
seg_args=(--kimg 2 --batch 64 --base 32 --mults 1 2 2 2 --attention 16 --timesteps 1000 --checkpoint-kimg 1
          --snapshot-kimg 2 --log-kimg 0.5 --no-progress --time-limit-min 30)
run medmem train diffusion "$out/data" "$out/seg" "${seg_args[@]}" --stop-kimg 0.7 --segment-output "$out/seg-0.7.pt"
run medmem train diffusion "$out/data" "$out/seg" "${seg_args[@]}" --stop-kimg 1.4 --resume "$out/seg-0.7.pt" \
  --segment-output "$out/seg-1.4.pt"
run medmem train diffusion "$out/data" "$out/seg" "${seg_args[@]}" --resume "$out/seg-1.4.pt"
run medmem train diffusion "$out/data" "$out/late" "${seg_args[@]}" --kimg 10000 --time-limit-min 1 \
  --time-margin-min 0.5
echo "time-limited run: exit $? (75 expected), checkpoint: $(ls "$out/late/checkpoint.pt" 2>&1)"
python - "$out" <<'PY' | tee "$out/segments.txt"
import sys
import torch
a, b = (torch.load(f"{sys.argv[1]}/{run}/network.pt", weights_only=True) for run in ("train", "seg"))
diff = max((a["weights"][k].float() - b["weights"][k].float()).abs().max().item() for k in a["weights"])
same = all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
print(f"segmented (3 jobs) vs one job on CUDA: bit-identical {same}, max |diff| {diff:.3g}")
PY
# sampling in shards on CUDA, with a shard killed mid-way and resumed: the same images as the one file
for i in 0 1; do
  run medmem sample "$out/train/network.pt" "$out/shard.$i-of-2.npy" --n 256 --batch 128 --sampler dpm-solver++ \
    --steps 25 --shard "$i/2"
done
timeout -s KILL 20 medmem sample "$out/train/network.pt" "$out/killed.npy" --n 2048 --batch 64 --sampler ancestral \
  --steps 100 > /dev/null 2>&1
cat "$out/.killed.npy.partial.json" 2>/dev/null; echo
run medmem sample "$out/train/network.pt" "$out/killed.npy" --n 2048 --batch 64 --sampler ancestral --steps 100
LIMIT=300 run medmem sample "$out/train/network.pt" "$out/unkilled.npy" --n 2048 --batch 64 --sampler ancestral \
  --steps 100
python - "$out" <<'PY' | tee "$out/shards.txt"
import sys
import numpy as np
from medmem.io import open_image_shards
out = sys.argv[1]
one = np.load(f"{out}/samples.npy")
shards = np.asarray(open_image_shards([f"{out}/shard.{i}-of-2.npy" for i in range(2)]))
print(f"2 shards vs one file on CUDA: identical {np.array_equal(one, shards)}, "
      f"images differing {int((one != shards).reshape(len(one), -1).any(1).sum())} of {len(one)}")
try:
    a, b = np.load(f"{out}/killed.npy"), np.load(f"{out}/unkilled.npy")
    print(f"killed and resumed vs uninterrupted: identical {np.array_equal(a, b)}")
except OSError as exc:
    print(f"killed and resumed: not compared ({exc})")
PY
# The workflow itself on the local GPUs, without --profile: the embedded study, shortened, with every
# GPU rule claiming one GPU (medmem gives concurrent jobs distinct GPUs). Run from a copy of the checkout.
ngpu=$(nvidia-smi -L | wc -l)
wf="$out/local-workflow"
rm -rf "$wf" && mkdir -p "$wf" && cp -r Snakefile config workflow src "$wf"/
python - "$wf/gpu.yaml" <<'PY'
import sys
import yaml
config = yaml.safe_load(open("config/config.yaml"))
short = dict(kimg=0.064, checkpoint_kimg=0.032, snapshot_kimg=0.032, log_kimg=0.016, samples=64)
config["models"]["stylegan2"].update(short)
config["models"]["diffusion"].update(short, steps=5)
config["memorization"]["device"] = "cuda"
for rule in ("train_stylegan2", "train_diffusion", "sample_stylegan2", "sample_diffusion", "memorization_shard"):
    config.setdefault("resources", {}).setdefault(rule, {}).update(gpu=1, runtime=20, mem_mb=8000)
yaml.safe_dump(config, open(sys.argv[1], "w"))
PY
start=$(date +%s)
(cd "$wf" && LIMIT=400 run snakemake --cores all --resources gpu="$ngpu" --configfile gpu.yaml) | tee "$out/local_workflow.txt"
echo "local GPU workflow (no --profile, $ngpu GPU(s)): $(( $(date +%s) - start )) s" | tee -a "$out/local_workflow.txt"
grep -h "process(es) on\|device" "$wf"/logs/train/*.log 2>/dev/null | head -n 6 | tee -a "$out/local_workflow.txt"
if [ -n "${mini_pid:-}" ]; then
  wait "$mini_pid"
  tail -n 3 "$out/miniature.log"
  cp "$mini/results/report/summary.md" "$mini/results/report/summary.csv" "$out"/ 2>/dev/null
  (cd "$mini" && tar czf ../miniature.tgz results/benchmarks results/report/*.csv results/report/*.md logs 2>/dev/null)
fi
fi
