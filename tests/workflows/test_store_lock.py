"""The store lock ``sessions.json.lock`` (spec §4.1): exclusive create, reclaim, wait, serialize."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import orjson
import pytest

from workflows.sessions import store_lock
from workflows.sessions.store_lock import StoreLocked, hold_store_lock

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "sessions.json"


def _exists(path: Path) -> bool:
    return path.exists()


def _lock_of(store: Path) -> Path:
    return store.with_name("sessions.json.lock")


def _foreign_lock(store: Path, pid: int | None, *, age: float = 0.0, raw: bytes = b"") -> bytes:
    """Write a lock file as another process would leave it; returns its bytes."""
    body = raw or orjson.dumps({"pid": pid, "createdAt": int((time.time() - age) * 1000)})
    lock = _lock_of(store)
    lock.write_bytes(body)
    if age:
        stamp = time.time() - age
        os.utime(lock, (stamp, stamp))
    return body


@pytest.fixture
def live_pid() -> Iterator[int]:
    child = subprocess.Popen(["sleep", "30"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def stale_holder_calls(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Every verdict of ``_stale_holder`` (each time the lock file was found taken)."""
    calls: list[str | None] = []
    original = store_lock._stale_holder

    def spy(path: Path) -> str | None:
        calls.append(holder := original(path))
        return holder

    monkeypatch.setattr(store_lock, "_stale_holder", spy)
    return calls


# --- holding ------------------------------------------------------------------------------


async def test_lock_file_holds_our_pid_while_held(store: Path) -> None:
    before = int(time.time() * 1000)
    async with hold_store_lock(store, wait=0):
        body = orjson.loads(_lock_of(store).read_bytes())
        assert set(body) == {"pid", "createdAt"}
        assert body["pid"] == os.getpid()
        assert before <= body["createdAt"] <= int(time.time() * 1000)
    assert not _lock_of(store).exists(), "the lock file is removed on exit"
    assert not _exists(store), "taking the lock does not create the store"


async def test_lock_file_is_removed_when_the_body_raises(store: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        async with hold_store_lock(store, wait=0):
            assert _lock_of(store).exists()
            _ = 1 / 0
    assert not _lock_of(store).exists()
    async with hold_store_lock(store, wait=0):
        pass


async def test_lock_can_be_taken_again_and_again(store: Path) -> None:
    for _ in range(5):
        async with hold_store_lock(store, wait=0):
            assert _lock_of(store).exists()
        assert not _lock_of(store).exists()


async def test_locks_of_different_stores_are_independent(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "sessions.json", tmp_path / "b" / "sessions.json"
    with anyio.fail_after(5):
        async with hold_store_lock(a, wait=0), hold_store_lock(b, wait=0):
            assert _lock_of(a).exists() and _lock_of(b).exists()
    assert not _lock_of(a).exists() and not _lock_of(b).exists()


# --- a live holder ------------------------------------------------------------------------


@pytest.mark.parametrize("holder", ["child", "parent"])
async def test_live_holder_raises_store_locked_after_the_wait(
    store: Path, live_pid: int, holder: str
) -> None:
    pid = live_pid if holder == "child" else os.getppid()
    body = _foreign_lock(store, pid)
    began = time.monotonic()
    with pytest.raises(StoreLocked) as caught:
        async with hold_store_lock(store, wait=0.3):
            pytest.fail("the lock of a live process was taken")
    waited = time.monotonic() - began
    assert f"pid {pid}" in str(caught.value)
    assert caught.value.path == _lock_of(store)
    assert 0.25 <= waited < 3, f"waited {waited:.2f} s for wait=0.3"
    assert _lock_of(store).read_bytes() == body, "a live holder's lock is never touched"


async def test_live_holder_with_zero_wait_raises_at_once(store: Path, live_pid: int) -> None:
    _foreign_lock(store, live_pid)
    with anyio.fail_after(2), pytest.raises(StoreLocked, match=f"pid {live_pid}"):
        async with hold_store_lock(store, wait=0):
            pytest.fail("the lock of a live process was taken")


async def test_live_holder_with_an_old_mtime_is_still_held(store: Path, live_pid: int) -> None:
    body = _foreign_lock(store, live_pid, age=60)
    with pytest.raises(StoreLocked, match=f"pid {live_pid}"):
        async with hold_store_lock(store, wait=0):
            pass
    assert _lock_of(store).read_bytes() == body


async def test_a_live_pids_lock_from_before_the_boot_is_reclaimed(
    store: Path, live_pid: int
) -> None:
    """A power cut can bring back a lock whose removal was not synced; after the reboot its
    pid may be another process's. A lock older than the boot has no holder."""
    booted = store_lock.boot_time()
    if booted is None:
        pytest.skip("no boot time on this system (/proc/stat)")
    _foreign_lock(store, live_pid, age=time.time() - booted + store_lock.BOOT_MARGIN + 5)
    with anyio.fail_after(2):
        async with hold_store_lock(store, wait=0):
            assert orjson.loads(_lock_of(store).read_bytes())["pid"] == os.getpid()


async def test_a_live_pids_lock_made_just_before_the_boot_time_is_held(
    store: Path, live_pid: int
) -> None:
    """Within the margin (a clock stepped at boot) the pid rule decides: still held."""
    booted = store_lock.boot_time()
    if booted is None:
        pytest.skip("no boot time on this system (/proc/stat)")
    body = _foreign_lock(store, live_pid, age=time.time() - booted + store_lock.BOOT_MARGIN / 2)
    with pytest.raises(StoreLocked, match=f"pid {live_pid}"):
        async with hold_store_lock(store, wait=0):
            pass
    assert _lock_of(store).read_bytes() == body


async def test_lock_released_while_waiting_is_acquired(
    store: Path, live_pid: int, stale_holder_calls: list[str | None]
) -> None:
    _foreign_lock(store, live_pid)
    acquired = anyio.Event()
    release = anyio.Event()
    seen: list[int] = []

    async def waiter() -> None:
        async with hold_store_lock(store, wait=10):
            seen.append(orjson.loads(_lock_of(store).read_bytes())["pid"])
            acquired.set()
            await release.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            # until the waiter has found the lock taken (or, wrongly, taken it)
            while not stale_holder_calls and not acquired.is_set():
                await anyio.lowlevel.checkpoint()
            assert stale_holder_calls[:1] == [f"pid {live_pid}"], "the waiter must wait"
            assert not acquired.is_set()
            _lock_of(store).unlink()  # the other holder is done
            await acquired.wait()
            assert seen == [os.getpid()]
            release.set()
    assert not _lock_of(store).exists()


async def test_cancelled_wait_leaves_the_holders_lock_alone(
    store: Path, live_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _foreign_lock(store, live_pid)
    original = store_lock._stale_holder
    with anyio.fail_after(5), anyio.CancelScope() as scope:

        def cancel_when_found_taken(path: Path) -> str | None:
            holder = original(path)
            scope.cancel()
            return holder

        monkeypatch.setattr(store_lock, "_stale_holder", cancel_when_found_taken)
        async with hold_store_lock(store, wait=10):
            pytest.fail("the lock of a live process was taken")
    assert scope.cancelled_caught
    assert _lock_of(store).read_bytes() == body
    monkeypatch.setattr(store_lock, "_stale_holder", original)
    _lock_of(store).unlink()
    async with hold_store_lock(store, wait=0):  # the in-process lock was released too
        assert orjson.loads(_lock_of(store).read_bytes())["pid"] == os.getpid()


# --- reclaiming ---------------------------------------------------------------------------


@pytest.mark.parametrize("age", [0.0, 60.0])
async def test_dead_holder_is_reclaimed_at_once(store: Path, dead_pid: int, age: float) -> None:
    _foreign_lock(store, dead_pid, age=age)
    with anyio.fail_after(2):
        async with hold_store_lock(store, wait=0):
            body = orjson.loads(_lock_of(store).read_bytes())
            assert body["pid"] == os.getpid(), "the lock file is ours while held"
    assert not _lock_of(store).exists()


UNPARSABLE = [
    b"",
    b"{",
    b"garbage",
    b"null",
    b"[1, 2]",
    b'{"createdAt": 1}',
    b'{"pid": "123"}',
    b'{"pid": 0}',
    b'{"pid": -5}',
    b'{"pid": 1.5}',
]


@pytest.mark.parametrize("raw", UNPARSABLE)
async def test_lock_without_a_pid_and_fresh_mtime_counts_as_held(store: Path, raw: bytes) -> None:
    lock = _lock_of(store)
    lock.write_bytes(raw)
    with pytest.raises(StoreLocked, match="not written its pid"):
        async with hold_store_lock(store, wait=0):
            pytest.fail("a fresh lock without a pid was taken")
    assert lock.read_bytes() == raw


@pytest.mark.parametrize("raw", UNPARSABLE)
async def test_lock_without_a_pid_and_old_mtime_is_reclaimed(store: Path, raw: bytes) -> None:
    lock = _lock_of(store)
    lock.write_bytes(raw)
    stamp = time.time() - 60
    os.utime(lock, (stamp, stamp))
    with anyio.fail_after(2):
        async with hold_store_lock(store, wait=0):
            assert orjson.loads(lock.read_bytes())["pid"] == os.getpid()
    assert not lock.exists()


async def test_orphan_self_lock_is_reclaimed(store: Path) -> None:
    """Spec §4.1: a lock naming this very process, which does not hold it, is an orphan.

    (A process restarted in a container often gets the pid its crashed predecessor had.)
    """
    _foreign_lock(store, os.getpid())
    with anyio.fail_after(5):
        async with hold_store_lock(store, wait=0.2):
            body = orjson.loads(_lock_of(store).read_bytes())
            assert body["pid"] == os.getpid()
    assert not _lock_of(store).exists()


# --- serialization inside one process ------------------------------------------------------


async def test_two_tasks_are_serialized_without_polling(
    store: Path, stale_holder_calls: list[str | None]
) -> None:
    order: list[str] = []
    first_in = anyio.Event()
    let_first_go = anyio.Event()

    async def first() -> None:
        async with hold_store_lock(store, wait=0):
            order.append("first in")
            first_in.set()
            await let_first_go.wait()
            order.append("first out")

    async def second() -> None:
        # wait=0: were it to meet the first task's lock file, it would raise StoreLocked
        async with hold_store_lock(store, wait=0):
            order.append("second in")
            assert orjson.loads(_lock_of(store).read_bytes())["pid"] == os.getpid()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await first_in.wait()
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert order == ["first in"], "the second task entered while the first held"
            let_first_go.set()
    assert order == ["first in", "first out", "second in"]
    assert stale_holder_calls == [], "a task never polls its own process's lock file"
    assert not _lock_of(store).exists()


async def test_many_tasks_never_hold_at_once(store: Path) -> None:
    holding = 0
    most = 0
    entered = 0

    async def worker() -> None:
        nonlocal holding, most, entered
        async with hold_store_lock(store, wait=0):
            holding += 1
            entered += 1
            most = max(most, holding)
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            holding -= 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)
    assert (entered, most) == (8, 1)
    assert not _lock_of(store).exists()


# --- one process, both backends -----------------------------------------------------------


def test_one_store_under_asyncio_then_trio(tmp_path: Path) -> None:
    """The in-process lock must not tie a store to the first event loop that used it."""
    store = tmp_path / "sessions.json"

    async def take() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(_hold, store)

    for backend in ("asyncio", "trio", "asyncio"):
        anyio.run(take, backend=backend)
    assert not _lock_of(store).exists()


async def _hold(store: Path) -> None:
    async with hold_store_lock(store, wait=0):
        await anyio.lowlevel.checkpoint()
