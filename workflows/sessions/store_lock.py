"""OpenClaw's store lock: ``sessions.json.lock``, created exclusively, holding ``{pid, createdAt}``.

Taking it is what keeps this tool and a running gateway from overwriting each other's store
writes. A lock whose pid is dead is reclaimed, and so is one made before the machine last
booted (a power cut can bring back a lock whose removal was not synced, and after a reboot
its pid may belong to another process); a live holder is waited for, with backoff
(50 ms x attempt, at most 1 s), for up to ``wait`` seconds, then ``StoreLocked`` names it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import orjson
from anyio.lowlevel import RunVar

from orchestrator import close_quietly, failpoint, file_ops, remove_stale_temps

__all__ = ("StoreLocked", "hold_store_lock")

#: A lock file without a readable pid is reclaimed once it is this old (seconds).
STALE_WITHOUT_PID = 30.0
#: A lock last written this long before the boot time is from before the boot (the margin
#: covers the clock being stepped at boot, which moves the computed boot time).
BOOT_MARGIN = 60.0


class StoreLocked(Exception):
    """The store lock stayed held by a live process for the whole wait."""

    def __init__(self, path: Path, waited: float, holder: str) -> None:
        self.path = path
        super().__init__(
            f"session store {path.parent} locked by {holder} for {waited:g} s; "
            "try again when that process is done, or remove the lock file if it is gone"
        )


# Per event loop: a lock made under one loop (asyncio, trio) cannot be used under another.
_local_locks: RunVar[dict[Path, anyio.Lock]] = RunVar("store_locks")


def _local_lock(path: Path) -> anyio.Lock:
    try:
        locks = _local_locks.get()
    except LookupError:
        locks = {}
        _local_locks.set(locks)
    return locks.setdefault(path, anyio.Lock())


@asynccontextmanager
async def hold_store_lock(store: Path, *, wait: float = 10.0) -> AsyncIterator[None]:
    """Hold ``<store>.lock`` (and an in-process lock, so this process never polls itself)."""
    lock_path = store.with_name(store.name + ".lock")
    local = _local_lock(lock_path)
    async with local:
        await _acquire(lock_path, wait)
        # Holding the lock, sweep lock temps a crash or a failed unlink left; one of another
        # process in flight is swept too, and that process simply tries again.
        remove_stale_temps(lock_path)
        try:
            yield
        finally:
            _remove(lock_path)
            failpoint("store_lock.released")


def _remove(lock_path: Path) -> None:
    # A failing removal is tried once more, then let go: failing here would turn a done
    # commit into an error, and a lock left with our pid is reclaimed as an orphan (by us,
    # or by anyone once we exit).
    for _ in range(2):
        try:
            file_ops().unlink(lock_path)
            return
        except FileNotFoundError:
            return
        except OSError:
            continue


async def _acquire(lock_path: Path, wait: float) -> None:
    began = time.monotonic()
    attempt = 0
    body = orjson.dumps({"pid": os.getpid(), "createdAt": int(time.time() * 1000)})
    while True:
        try:
            _create_complete(lock_path, body)
        except _Swept:
            continue  # our temp was swept by the holder before we could link it: again
        except FileExistsError:
            holder = _stale_holder(lock_path)
            if holder is None:
                continue  # it was stale and is gone: try again at once
            waited = time.monotonic() - began
            if waited >= wait:
                raise StoreLocked(lock_path, round(waited, 1), holder) from None
            attempt += 1
            await anyio.sleep(min(0.05 * attempt, 1.0, max(wait - waited, 0.0)))
            continue
        failpoint("store_lock.acquired")
        return


class _Swept(Exception):
    """Our lock temp vanished before it was linked (the holder swept it): try again."""


def _create_complete(lock_path: Path, body: bytes) -> None:
    """Create ``lock_path`` holding ``body``, or raise FileExistsError if it exists.

    Written under a temporary name, then linked into place (a link never replaces a file):
    the lock never exists without its pid, so nobody ever waits on an empty lock file.
    """
    ops = file_ops()
    temp = lock_path.with_name(f".{lock_path.name}.{secrets.token_hex(4)}.tmp")
    fd = ops.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        ops.write(fd, body)
        # Durable before its name is: a power cut must never leave an empty lock behind
        # (the store's own directory fsync would make the name durable).
        ops.fsync(fd)
    except BaseException:
        close_quietly(fd)
        with contextlib.suppress(OSError):
            ops.unlink(temp)
        raise
    close_quietly(fd)
    try:
        ops.link(temp, lock_path)
    except FileNotFoundError:
        raise _Swept from None
    finally:
        with contextlib.suppress(OSError):
            ops.unlink(temp)


def _stale_holder(lock_path: Path) -> str | None:
    """Remove the lock if its holder is gone and return None; else describe the holder."""
    try:
        before = lock_path.stat()
        raw = lock_path.read_bytes()
    except FileNotFoundError:
        return None
    pid = _pid_of(raw)
    # Our own pid: no task of this process holds the lock (the in-process lock is ours), so
    # it is an orphan, e.g. of a crashed predecessor that had the same pid in a container.
    # A lock from before the boot has no holder either, whatever its pid is now.
    if pid is not None and pid != os.getpid() and _alive(pid) and not _before_boot(before):
        return f"pid {pid}"
    if pid is None and time.time() - before.st_mtime < STALE_WITHOUT_PID:
        return "a process that has not written its pid yet"
    # Reclaim only the very file judged stale: another process may have reclaimed it and
    # taken a fresh lock in the meantime.
    with contextlib.suppress(FileNotFoundError):
        if lock_path.stat().st_ino == before.st_ino:
            file_ops().unlink(lock_path)
    return None


def boot_time() -> float | None:
    """When this machine booted (seconds since the epoch), or None where it cannot be read."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _before_boot(st: os.stat_result) -> bool:
    booted = boot_time()
    return booted is not None and st.st_mtime < booted - BOOT_MARGIN


def _pid_of(raw: bytes) -> int | None:
    try:
        pid = orjson.loads(raw).get("pid")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
