"""Compare two results/ folders of the workflow, file by file: what changed between two versions.

    python tools/compare_results.py BEFORE/results AFTER/results
    python tools/compare_results.py --record RESULTS OUT.json   # the digests tests/workflow compares with

Arrays (.npy) and networks (.pt) must be equal bit for bit; tables (.parquet, .csv) cell for cell
(after the memorization tables' column `channel` became `view`); JSON value for value, except wall
times; PNG figures byte for byte. Prints one line per file that differs and exits 1 if any does.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

RENAMED = {"channel": "view"}  # memorization, calibration and baseline tables, renamed in issue 14
# wall-clock figures: they differ between any two runs (the training curve's throughput panel too)
TIMING = {"seconds", "wall_s", "images_per_s", "s_per_kimg", "elapsed_s", "time_s", "duration_s"}


def _table(path: Path) -> pd.DataFrame:
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    if "view" not in table.columns and "channel" in table.columns and "channel_name" in table.columns:
        table = table.rename(columns=RENAMED)
    if path.name in ("holdout_baseline.csv", "calibration.csv", "flags.csv") and "channel" in table.columns:
        table = table.rename(columns=RENAMED)
    return table.drop(columns=[c for c in table.columns if c in TIMING])


def _json(value):
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def differs(before: Path, after: Path) -> str:
    """'' when the two files hold the same results, else why not."""
    if not after.exists():
        return "missing"
    suffix = before.suffix
    if suffix == ".npy":
        a, b = np.load(before, mmap_mode="r"), np.load(after, mmap_mode="r")
        return "" if a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b) else "array differs"
    if suffix == ".pt":
        from medmem.weights import load_plain

        a, b = load_plain(before, "before"), load_plain(after, "after")
        return "" if _same(a, b) else "tensors differ"
    if suffix in (".parquet", ".csv"):
        a, b = _table(before), _table(after)
        if list(a.columns) != list(b.columns):
            extra = [c for c in b.columns if c not in a.columns]
            if [c for c in b.columns if c in a.columns] != list(a.columns):
                return f"columns {list(a.columns)} → {list(b.columns)}"
            b = b[list(a.columns)]
            note = f" (added columns {extra})"
        else:
            note = ""
        try:
            pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)
        except AssertionError as exc:
            return "table differs: " + " ".join(str(exc).split())[:160]
        return note.strip() and f"same values{note}"
    if suffix == ".json":
        a, b = _json(json.loads(before.read_text())), _json(json.loads(after.read_text()))
        added = sorted(set(b) - set(a)) if isinstance(a, dict) and isinstance(b, dict) else []
        if added and {k: v for k, v in b.items() if k not in added} == a:
            return f"same values (added keys {added})"
        return "" if a == b else "json differs"
    if suffix == ".tsv" or suffix in (".log", ".md", ".html") or before.name == "training.png":
        return ""  # benchmarks, logs and the training curves' throughput panel: wall-clock time
    same = hashlib.sha256(before.read_bytes()).digest() == hashlib.sha256(after.read_bytes()).digest()
    return "" if same else "bytes differ"


def _same(a, b) -> bool:
    import torch

    if isinstance(a, dict):
        a, b = _json(a), _json(b) if isinstance(b, dict) else b
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b or (a != a and b != b)


# what a run's numbers are: data, networks, samples, searches, calibration (not timings, logs, figures)
RECORDED = ("data/*/*.npy", "data/*/slices.csv", "train/*/*/network.pt", "samples/*/*.npy",
            "memorization/*/*.parquet", "memorization/*/*.csv", "memorization/*/*.npy", "detector/*/*.parquet")


def digest(path: Path) -> str:
    """SHA-256 of a result's content as `differs` compares it: array bytes, network tensors, table cells."""
    h = hashlib.sha256()
    if path.suffix == ".npy":
        a = np.load(path, mmap_mode="r")
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    elif path.suffix == ".pt":
        import torch

        from medmem.weights import load_plain

        def walk(value, key=""):
            if isinstance(value, dict):
                for k in sorted(value):
                    walk(value[k], f"{key}/{k}")
            elif isinstance(value, (list, tuple)):
                for i, v in enumerate(value):
                    walk(v, f"{key}/{i}")
            elif isinstance(value, torch.Tensor):
                h.update(f"{key}{value.dtype}{tuple(value.shape)}".encode())
                h.update(value.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes()
                         if value.numel() else b"")
            else:
                h.update(f"{key}={value!r}".encode())

        walk(load_plain(path, "network"))
    else:
        h.update(_table(path).to_csv(index=False).encode())
    return h.hexdigest()


def record(results: Path) -> dict[str, str]:
    """{relative path: digest} of every recorded result (RECORDED) under `results`."""
    files = sorted({p for pattern in RECORDED for p in results.glob(pattern)})
    return {p.relative_to(results).as_posix(): digest(p) for p in files}


def main(argv=None) -> int:
    argv = list(argv or sys.argv[1:])
    if argv[:1] == ["--record"]:
        import platform

        import torch

        results, out = Path(argv[1]), Path(argv[2])
        out.write_text(json.dumps({"torch": torch.__version__, "machine": platform.machine(),
                                   "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                   "digests": record(results)}, indent=1) + "\n")
        return 0
    before, after = (Path(p) for p in argv)
    bad = 0
    for path in sorted(p for p in before.rglob("*") if p.is_file() and "benchmarks" not in p.parts):
        why = differs(path, after / path.relative_to(before))
        if why:
            print(f"{path.relative_to(before)}: {why}")
            bad += not why.startswith("same values")
    print(f"{bad} file(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
