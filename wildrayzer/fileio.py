"""Crash-safe file writes shared by checkpoints, run directories and the data importer; ownership markers and the
name check that keeps user-given names (run names, splits, scenes) inside their folder; guarded reads of user files
(regular files only, size and nesting bounds)."""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from pathlib import Path
from typing import BinaryIO

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


# ------------------------------------------------------------------------------------------ reading user files
# Every file the package reads on a user's behalf (images, metadata JSON, list files, view indices, config YAML,
# checkpoints and their training state) goes through check_regular_file / open_regular: a FIFO, device, socket or
# directory is refused before it is read (reading a FIFO waits for a writer forever; a device may never end).
MAX_TEXT_BYTES = 64 * 1024 * 1024  # metadata JSON, list files, view-index JSON
MAX_JSON_DEPTH = 64  # nesting of a JSON file; WildRayZer's own files nest 4 levels


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _not_regular(path, what: str, mode: int, error: type[UserError]) -> UserError:
    return error(f"{what} {path} is {_kind(mode)}, not a regular file; WildRayZer reads only regular files (a pipe "
                 "or device could block or never end): point it at a regular file")


def check_regular_file(path, what: str, error: type[UserError] = UserError) -> Path:
    """``path`` when it names a regular file (symlinks followed); a FIFO, device, socket or directory is ``error``
    with one line naming ``what`` and the path, without opening it. A missing path raises FileNotFoundError, so
    callers keep their own 'not found' message. For readers that take a file name (safetensors); prefer
    :func:`open_regular`, which has no gap between the check and the open."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, what, mode, error)
    return Path(path)


def open_regular(path, what: str, error: type[UserError] = UserError) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file. It is opened with O_NONBLOCK (opening a FIFO does
    not wait for a writer), checked with fstat (no race with a swapped file), then set back to blocking. Other kinds
    are ``error`` as in :func:`check_regular_file`; a missing path raises FileNotFoundError."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, what, mode, error)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path, what: str, error: type[UserError] = UserError, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of the regular file ``path``, refused (``error``, one line) above ``limit`` bytes before reading."""
    with open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise error(f"{what} {path} is {max(size, len(data)) / 2 ** 20:.1f} MiB, above the {limit / 2 ** 20:.0f} MiB "
                    f"limit for such files; it cannot be a valid {what}")
    return data


def json_depth_ok(value, max_depth: int) -> bool:
    """True when ``value`` (parsed JSON) nests at most ``max_depth`` lists/dicts deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            if depth > max_depth:
                return False
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return True


def load_json(path, what: str, error: type[UserError] = UserError, limit: int = MAX_TEXT_BYTES,
              max_depth: int = MAX_JSON_DEPTH):
    """Parse the JSON file ``path``: regular file, at most ``limit`` bytes, at most ``max_depth`` levels deep
    (else ``error``, one line). Syntax and encoding errors raise ValueError (json.JSONDecodeError,
    UnicodeDecodeError) and a missing file FileNotFoundError, for the caller's own message."""
    data = read_capped(path, what, error, limit)
    try:
        value = json.loads(data)
    except RecursionError:
        value, ok = None, False
    else:
        ok = json_depth_ok(value, max_depth)
    if not ok:
        raise error(f"{what} {path} nests lists/objects more than {max_depth} levels deep; it cannot be a valid "
                    f"{what}")
    return value
