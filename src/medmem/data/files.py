"""Scanning input folders: the files a user put there, without operating-system debris.

Every place that lists an input folder goes through `input_files` / `input_dirs`, so hidden files
and the debris that copying between systems leaves behind are ignored in one way everywhere:

- names starting with "." (hidden files; macOS `._<name>` AppleDouble companions, written when a
  Mac copies to exFAT, FAT or SMB volumes; `.DS_Store`);
- `__MACOSX/` folders (macOS zip archives) and hidden folders, with everything below them;
- `Thumbs.db` and `desktop.ini` (Windows Explorer), in any letter case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

DEBRIS_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "__macosx"})


def is_debris(name: str) -> bool:
    """True for a hidden name or known operating-system debris (one path component)."""
    return name.startswith(".") or name.lower() in DEBRIS_NAMES


def _walk(folder: Path, recursive: bool) -> Iterator[Path]:
    for entry in sorted(folder.iterdir()):
        if is_debris(entry.name):
            continue
        if entry.is_dir():
            if recursive:
                yield from _walk(entry, recursive)
        elif entry.is_file():
            yield entry


def input_files(folder, recursive: bool = False) -> list[Path]:
    """The user's files in `folder` (sorted by path), debris and hidden files left out.

    With `recursive`, files in subfolders too, never below a hidden or `__MACOSX` folder.
    """
    return list(_walk(Path(folder), recursive))


def input_dirs(folder) -> list[Path]:
    """The user's subfolders of `folder` (sorted), hidden and `__MACOSX` folders left out."""
    return [p for p in sorted(Path(folder).iterdir()) if p.is_dir() and not is_debris(p.name)]
