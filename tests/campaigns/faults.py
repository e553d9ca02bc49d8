"""A ``FileOps`` that fails the n-th file operation with a chosen errno (campaign 3).

Every primitive of ``orchestrator._fs.FileOps`` is counted (``open``, ``write``, ``fsync``,
``close``, ``truncate``, ``read``, ``replace``, ``link``, ``unlink``, ``mkdir``,
``fsync_dir``; ``rename_noreplace`` is counted as the ``link`` and ``unlink`` it is made of).
The n-th counted call fails, once or (``persistent``) with every counted call after it too,
the way a disk that went bad or full keeps failing.

What a failing call has done when it raises, as the kernel would leave it:

- ``open``, ``replace``, ``link``, ``unlink``, ``mkdir``, ``truncate``, ``read``: nothing;
- ``write``: nothing, or with ``torn_writes`` the first half of the bytes (a disk filling up
  mid-write);
- ``fsync`` / ``fsync_dir``: no sync (the dirty pages may be gone: the caller must not trust
  the descriptor again);
- ``close``: the descriptor *is* closed (Linux releases it even when close reports an error).

With ``sync=False`` a call that does not fail skips the sync itself (``fsync``,
``fsync_dir``): no power loss is simulated, so what matters is that a sync is asked for and
what happens when it fails, and a campaign of thousands of runs is not paced by the disk.

It also watches the rule "an fsync error is never retried on the same descriptor": after an
``fsync(fd)`` fails, a later ``fsync`` of that fd before it is closed is recorded in
``fsync_retries`` (and runs normally, so the test sees the rest of the behaviour).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import FileOps
from orchestrator._fs import DIR_MODE, FILE_MODE

__all__ = ("FaultyOps", "Fired")

#: The counted operations.
OPERATIONS = frozenset(
    {
        "open",
        "write",
        "fsync",
        "close",
        "truncate",
        "read",
        "replace",
        "link",
        "unlink",
        "mkdir",
        "fsync_dir",
    }
)


@dataclass(frozen=True, slots=True)
class Fired:
    """One injected failure: which counted call, what it was, on what."""

    index: int
    op: str
    target: str


class FaultyOps(FileOps):
    """Fail the ``fail_at``-th counted operation (1-based) with ``errno_``.

    ``kinds`` restricts counting (and failing) to some operations, e.g. ``{"fsync"}`` fails
    the n-th fsync. ``fail_at=None`` fails nothing and only counts (a dry run).
    """

    def __init__(
        self,
        fail_at: int | None,
        errno_: int,
        *,
        persistent: bool = False,
        torn_writes: bool = False,
        kinds: Iterable[str] = OPERATIONS,
        sync: bool = True,
    ) -> None:
        self.fail_at = fail_at
        self.sync = sync
        self.errno = errno_
        self.persistent = persistent
        self.torn_writes = torn_writes
        self.kinds = frozenset(kinds)
        unknown = self.kinds - OPERATIONS
        if unknown:
            raise ValueError(f"not FileOps primitives: {sorted(unknown)}")
        #: Counted calls so far.
        self.count = 0
        #: Counted calls by operation.
        self.by_op: Counter[str] = Counter()
        #: Every injected failure.
        self.fired: list[Fired] = []
        #: ``fsync`` calls on a descriptor whose earlier fsync failed (must stay empty).
        self.fsync_retries: list[tuple[int, str]] = []
        self.enabled = True
        self._paths: dict[int, str] = {}
        self._fsync_failed: set[int] = set()

    # -- the gate --------------------------------------------------------------------------

    def _due(self, op: str, target: object) -> bool:
        """Count the call; whether it must fail."""
        if not self.enabled or op not in self.kinds:
            return False
        self.count += 1
        self.by_op[op] += 1
        if self.fail_at is None:
            return False
        if self.count == self.fail_at or (self.persistent and self.count > self.fail_at):
            self.fired.append(Fired(self.count, op, str(target)))
            return True
        return False

    def _error(self, target: object) -> OSError:
        return OSError(self.errno, os.strerror(self.errno), str(target))

    def _gate(self, op: str, target: object) -> None:
        if self._due(op, target):
            raise self._error(target)

    def disable(self) -> None:
        """Stop counting and failing (the fault is removed); the records stay."""
        self.enabled = False

    def _name(self, fd: int) -> str:
        return self._paths.get(fd, f"fd {fd}")

    # -- the primitives --------------------------------------------------------------------

    def open(self, path: Path, flags: int, mode: int = FILE_MODE) -> int:
        self._gate("open", path)
        fd = super().open(path, flags, mode)
        self._paths[fd] = str(path)
        self._fsync_failed.discard(fd)
        return fd

    def write(self, fd: int, data: bytes) -> None:
        if self._due("write", self._name(fd)):
            if self.torn_writes and len(data) > 1:
                super().write(fd, data[: len(data) // 2])
            raise self._error(self._name(fd))
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if fd in self._fsync_failed:
            self.fsync_retries.append((fd, self._name(fd)))
        if self._due("fsync", self._name(fd)):
            self._fsync_failed.add(fd)
            raise self._error(self._name(fd))
        if self.sync:
            super().fsync(fd)

    def close(self, fd: int) -> None:
        due = self._due("close", self._name(fd))
        name = self._paths.pop(fd, f"fd {fd}")
        self._fsync_failed.discard(fd)
        super().close(fd)
        if due:
            raise self._error(name)

    def truncate(self, fd: int, length: int) -> None:
        self._gate("truncate", self._name(fd))
        super().truncate(fd, length)

    def read(self, path: Path) -> bytes:
        self._gate("read", path)
        return super().read(path)

    def replace(self, src: Path, dst: Path) -> None:
        self._gate("replace", dst)
        super().replace(src, dst)
        for fd, name in list(self._paths.items()):  # name descriptors by their file's new name
            if name == str(src):
                self._paths[fd] = str(dst)

    def link(self, src: Path, dst: Path) -> None:
        self._gate("link", dst)
        super().link(src, dst)

    def unlink(self, path: Path) -> None:
        self._gate("unlink", path)
        super().unlink(path)

    def mkdir(self, path: Path, mode: int = DIR_MODE) -> None:
        self._gate("mkdir", path)
        super().mkdir(path, mode)

    def fsync_dir(self, path: Path) -> None:
        self._gate("fsync_dir", path)
        if self.sync:
            super().fsync_dir(path)
