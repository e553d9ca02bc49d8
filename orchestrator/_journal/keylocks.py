"""Per-key exclusion: an anyio lock per key in this process, and an flock across processes."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from .._fs import close_quietly, ensure_dir, file_ops
from ..errors import JournalUnavailable, KeyBusy

__all__ = ("FileKeyLocks", "LocalKeyLocks")

#: How many unlocked lock files stay open for reuse.
IDLE_LOCK_FILES = 256


class LocalKeyLocks:
    """One FIFO lock per key, forgotten when nobody holds or waits for it.

    Hand-made rather than an ``anyio.Lock`` per key: taking a free key costs two dict
    operations and no trip through the event loop, which matters once per run.
    """

    def __init__(self) -> None:
        # key -> its waiters, oldest first; the key is held while it is in the dict.
        self._held: dict[str, deque[anyio.Event]] = {}

    def hold(self, key: str) -> _Held:
        return _Held(self, key)

    async def _acquire(self, key: str) -> None:
        waiters = self._held.get(key)
        if waiters is None:
            self._held[key] = deque()
            return
        turn = anyio.Event()
        waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # handed the key just as we were cancelled: pass it on
                self._release(key)
            else:
                waiters.remove(turn)
            raise

    def _release(self, key: str) -> None:
        waiters = self._held[key]
        if waiters:
            waiters.popleft().set()  # the key goes straight to the next waiter
        else:
            del self._held[key]


class _Held:
    __slots__ = ("_key", "_locks")

    def __init__(self, locks: LocalKeyLocks, key: str) -> None:
        self._locks, self._key = locks, key

    async def __aenter__(self) -> None:
        await self._locks._acquire(self._key)

    async def __aexit__(self, *exc: object) -> None:
        self._locks._release(self._key)


class FileKeyLocks:
    """``LocalKeyLocks`` plus an flock on ``<directory>/<sha256(key)>.lock``.

    The kernel drops an flock when its process dies, so a crashed holder never leaves a key
    locked. The file name is a hash: a key never becomes a path.
    """

    def __init__(self, directory: Path, *, timeout: float = 120.0) -> None:
        self.directory = directory
        self.timeout = timeout
        self._local = LocalKeyLocks()
        #: Written into a lock file by its holder; tells a later holder who held it last.
        self.token = f"pid {os.getpid()} {secrets.token_hex(6)}"
        self._dir_ready = False
        # Open lock files of recently used keys: creating a file costs ~60 µs here, an
        # unlock and a relock on an open one ~2 µs, and sessions are reset again and again.
        self._idle: OrderedDict[str, int] = OrderedDict()

    def path_for(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")

    def is_held(self, key: str) -> bool:
        """Whether a process (this one included) holds ``key`` now. Never waits or creates.

        A shared flock probe: it fails at once if anyone holds the exclusive lock. The probe
        opens its own descriptor, so closing it releases only the probe's lock.
        """
        path = self.path_for(key)
        try:
            fd = file_ops().open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise JournalUnavailable(path, exc.strerror or str(exc)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise JournalUnavailable(path, exc.strerror or str(exc)) from exc
        finally:
            close_quietly(fd)
        return False

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[bool]:
        """Hold ``key``; yields whether someone else (another process, or another journal
        instance) held it since this instance last did, i.e. whether they may have written
        records of this key that this instance has not read."""
        async with self._local.hold(key):
            fd, previous = await self._acquire(key)
            try:
                yield previous not in ("", self.token)
            finally:
                self._release(key, fd)

    def _release(self, key: str, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            close_quietly(fd)  # closing releases it too
            return
        self._idle[key] = fd
        while len(self._idle) > IDLE_LOCK_FILES:
            close_quietly(self._idle.popitem(last=False)[1])

    def close(self) -> None:
        """Close the idle lock files (none is held: they were unlocked when released)."""
        while self._idle:
            close_quietly(self._idle.popitem()[1])

    async def _acquire(self, key: str) -> tuple[int, str]:
        path = self.path_for(key)
        fd = self._idle.pop(key, None)
        try:
            if fd is None:
                if not self._dir_ready:
                    ensure_dir(self.directory)
                    self._dir_ready = True
                fd = file_ops().open(path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise JournalUnavailable(path, exc.strerror or str(exc)) from exc
        delay, waited = 0.001, 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    close_quietly(fd)
                    raise JournalUnavailable(path, exc.strerror or str(exc)) from exc
            if waited >= self.timeout:
                holder = _read_holder(fd)
                close_quietly(fd)
                raise KeyBusy(key, self.timeout, holder)
            # Polling, not a blocking flock in a thread: a thread stuck in flock cannot be
            # cancelled, and this wait must end when the caller is cancelled.
            await anyio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)
        previous = _read_holder(fd) or ""
        if previous != self.token:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self.token}\n".encode(), 0)
        return fd, previous


def _read_holder(fd: int) -> str | None:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return text or None
