"""Crash-safe file writes shared by checkpoints, run directories and the data importer; ownership markers and the
name check that keeps user-given names (run names, splits, scenes) inside their folder."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

from .errors import UserError


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some filesystems cannot fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + fsync + os.replace; never leaves a partial ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


_MARKER_MAX_BYTES = 4096


def write_marker(folder: Path, name: str, kind: str) -> None:
    """Write ``folder/name``: a small JSON that says WildRayZer made ``folder`` (see :func:`has_marker`)."""
    atomic_write_bytes(Path(folder) / name, json.dumps({"kind": kind, "version": 1}).encode())


def has_marker(folder: Path, name: str, kind: str) -> bool:
    """True when ``folder`` is a real directory holding the marker :func:`write_marker` writes for ``kind``: the proof
    that WildRayZer made the folder and may replace or delete it. Symlinks never count."""
    folder, path = Path(folder), Path(folder) / name
    try:
        if folder.is_symlink() or not folder.is_dir() or path.is_symlink() or not path.is_file():
            return False
        if path.stat().st_size > _MARKER_MAX_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == kind


def check_name(value, what: str, error: type[UserError] = UserError) -> str:
    """``value`` when it is one plain file/folder name that stays inside the folder it is joined to; otherwise
    ``error`` with one line naming ``what`` (a config key or command-line option). Refused: empty names, path
    separators, ``..``, a leading ``.``, control characters (newlines included), more than 255 bytes."""
    problem = None
    if not isinstance(value, str) or not value:
        problem = "it is empty"
    elif "/" in value or "\\" in value or (os.altsep and os.altsep in value):
        problem = "it contains a path separator"
    elif ".." in value:
        problem = "it contains '..'"
    elif value.startswith("."):
        problem = "it starts with '.'"
    elif any(unicodedata.category(c) == "Cc" for c in value):
        problem = "it contains a control character or newline"
    elif len(value.encode("utf-8", "surrogateescape")) > 255:
        problem = "it is longer than 255 bytes"
    if problem:
        raise error(f"invalid {what} {value!r}: {problem}; use a plain folder name (no '/', '\\', '..' or control "
                    "characters, not starting with '.')")
    return value
