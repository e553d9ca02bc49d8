"""Every file operation of the journal and the local adapters goes through this module.

One small seam, so tests can swap the operations for a simulated file system (power loss,
I/O errors) and so the durability rules live in one place:

- a file the tool rewrites is replaced atomically: temp file, fsync, ``os.replace``, fsync
  the directory (``atomic_write``);
- a new file or directory is fsynced into its parent;
- files are created ``0600`` and directories ``0700`` whatever the umask;
- a path built from outside data never leaves its base directory (``safe_join``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ._failpoints import failpoint

__all__ = (
    "DIR_MODE",
    "FILE_MODE",
    "FileOps",
    "atomic_write",
    "close_quietly",
    "ensure_dir",
    "file_ops",
    "first_symlink",
    "layer_file_ops",
    "remove_stale_temps",
    "safe_join",
    "set_file_ops",
)

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700


class FileOps:
    """The primitive operations, each a thin wrapper over ``os``."""

    def open(self, path: Path, flags: int, mode: int = FILE_MODE) -> int:
        fd = os.open(path, flags | os.O_CLOEXEC, mode)
        if flags & os.O_CREAT:
            # The umask may have taken bits away or (umask 000) left more than asked.
            os.fchmod(fd, mode)
        return fd

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def read(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def link(self, src: Path, dst: Path) -> None:
        """A second name for ``src``; FileExistsError if ``dst`` exists (never replaces)."""
        os.link(src, dst)

    def rename_noreplace(self, src: Path, dst: Path) -> None:
        """Rename that fails with FileExistsError instead of overwriting ``dst``."""
        self.link(src, dst)
        self.unlink(src)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def mkdir(self, path: Path, mode: int = DIR_MODE) -> None:
        os.mkdir(path, mode)
        os.chmod(path, mode)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: What ``set_file_ops`` installed; ``_ops`` is it, or the layer's wrapper around it.
_installed: FileOps = FileOps()
_layer: Callable[[FileOps], FileOps] | None = None
_ops: FileOps = _installed


def file_ops() -> FileOps:
    return _ops


def set_file_ops(ops: FileOps) -> FileOps:
    """Swap the operations (tests: a simulated file system); returns the previous ones.

    A layer (``layer_file_ops``) stays around whatever is installed.
    """
    global _installed
    previous, _installed = _installed, ops
    _stack()
    return previous


def layer_file_ops(layer: Callable[[FileOps], FileOps] | None) -> None:
    """Keep ``layer(ops)`` around the installed operations, now and after every
    ``set_file_ops`` (``None`` removes it).

    For a checker that must see every operation whatever a test installs (the test suite's
    ordering checker): ``layer`` gets each newly installed ops and returns the ops to use,
    which delegate to them.
    """
    global _layer
    _layer = layer
    _stack()


def _stack() -> None:
    global _ops
    _ops = _installed if _layer is None else _layer(_installed)


def ensure_dir(path: Path) -> None:
    """Create ``path`` and missing parents (0700), each fsynced into its parent."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    try:
        _ops.mkdir(path)
    except FileExistsError:
        return
    _ops.fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, *, point: str = "atomic_write") -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new bytes, never a mix."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = _ops.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        _ops.write(fd, data)
        failpoint(f"{point}.temp_written")
        _ops.fsync(fd)
    except BaseException:
        close_quietly(fd)
        _unlink_quietly(temp)
        raise
    close_quietly(fd)  # the bytes are fsynced: a failing close changes nothing
    failpoint(f"{point}.temp_synced")
    _ops.replace(temp, path)
    failpoint(f"{point}.replaced")
    _ops.fsync_dir(path.parent)
    failpoint(f"{point}.dir_synced")


def close_quietly(fd: int) -> None:
    """Close ``fd``, ignoring an error: for descriptors whose data is already fsynced (or
    that never held data), where a failing close changes nothing but must not hide the
    outcome that came before it. Linux frees the descriptor even when close fails."""
    with contextlib.suppress(OSError):
        _ops.close(fd)


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temp files ``atomic_write`` left for ``path`` when a crash interrupted it.

    Call it only while holding whatever lock guards writes to ``path``: a temp file of a live
    writer would otherwise be pulled from under it.
    """
    removed: list[Path] = []
    # Exactly ".<name>.<8 hex>.tmp": the temp files of *other* names beginning with this
    # one (".sessions.json.lock.<hex>.tmp" for "sessions.json") are not ours to remove.
    ours = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        if ours.fullmatch(name):
            _unlink_quietly(path.parent / name)
            removed.append(path.parent / name)
    return removed


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        _ops.unlink(path)


def first_symlink(base: Path, path: Path) -> Path | None:
    """The first symlink on the way from ``base`` (itself excluded) down to ``path``, which
    must be under it; None if there is none (missing directories are no symlinks)."""
    here = base
    for part in path.relative_to(base).parts:
        here = here / part
        if os.path.islink(here):
            return here
    return None


def safe_join(base: Path, name: str) -> Path:
    """``base / name`` for a single path component ``name``; ValueError if it could escape."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.sep in name
    ):
        raise ValueError(f"{name!r} is not a plain file name")
    return base / name
