"""Network and checkpoint files that never run code when loaded.

`network.pt` and `checkpoint.pt` hold only tensors (state dicts) and plain values: dicts, lists,
tuples, strings, numbers, booleans and None (the network's constructor config, settings, the
training log). They are written with `torch.save` and read with `torch.load(weights_only=True)`,
PyTorch's restricted unpickler, which builds tensors and those plain values and refuses every other
Python object instead of constructing it. A file that needs anything else (a pickled module, a
crafted object that would call a function on load) is refused with one line naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from medmem.errors import InputError
from medmem.io import atomic_output

_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value, where: str) -> None:
    if isinstance(value, torch.Tensor) or isinstance(value, _PLAIN):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is not a string or integer")
            _check_plain(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(value).__name__} is neither a tensor nor a plain value")


def save_plain(payload: dict, path) -> None:
    """Write `payload` (tensors and plain values only, checked first) atomically to `path`.

    Raises TypeError, before anything is written, for any other object (a module, a numpy array,
    a generator), so a file this writes always loads with `weights_only=True`.
    """
    _check_plain(payload, "payload")
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_plain(path, what: str, device="cpu") -> dict:
    """Read a file written by `save_plain` with `torch.load(weights_only=True)`.

    `what` names the kind of file in messages ("network", "checkpoint"). Raises InputError (one line
    naming the file) when it does not exist, is not a torch file, is not a dict, or holds anything
    but tensors and plain values: such a file is refused before any of its objects is built.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file does not exist")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError for refused objects; RuntimeError etc. for corrupt files
        text = str(exc)
        refused = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", text)
        if refused:
            raise InputError(f"{path}: refused: this {what} file holds objects other than tensors and plain "
                             f"values ({refused.group(1)}), and loading them could run code; medmem writes only "
                             "weights and plain values") from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+?)\n\n", text, re.S)
        first = (reason.group(1) if reason else text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
        raise InputError(f"{path}: not a readable {what} file ({' '.join(first.split())[:200]})") from None
    if not isinstance(payload, dict):
        raise InputError(f"{path}: not a {what} file written by medmem (holds a {type(payload).__name__})")
    return payload
