"""Per-key locks in one process: FIFO, exclusive, and robust to waiters being cancelled."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from orchestrator._journal.keylocks import LocalKeyLocks

pytestmark = pytest.mark.anyio


async def test_waiters_get_the_key_in_order_one_at_a_time() -> None:
    locks = LocalKeyLocks()
    order: list[int] = []
    inside = 0
    release = anyio.Event()

    async def user(i: int) -> None:
        nonlocal inside
        async with locks.hold("k"):
            inside += 1
            assert inside == 1
            order.append(i)
            await release.wait()
            await checkpoint()
            inside -= 1

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(user, i)
            await wait_all_tasks_blocked()
        release.set()
    assert order == [0, 1, 2, 3, 4]
    assert locks._held == {}


async def test_a_cancelled_waiter_leaves_the_queue_and_the_key_still_passes_on() -> None:
    locks = LocalKeyLocks()
    got: list[str] = []
    release = anyio.Event()
    doomed = anyio.CancelScope()

    async def holder() -> None:
        async with locks.hold("k"):
            got.append("holder")
            await release.wait()

    async def waiter(name: str) -> None:
        async with locks.hold("k"):
            got.append(name)

    async def cancelled_waiter() -> None:
        with doomed:
            await waiter("cancelled")

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await wait_all_tasks_blocked()
        tg.start_soon(cancelled_waiter)
        await wait_all_tasks_blocked()
        tg.start_soon(waiter, "next")
        await wait_all_tasks_blocked()
        doomed.cancel()
        await wait_all_tasks_blocked()
        release.set()
    assert got == ["holder", "next"]
    assert locks._held == {}


async def test_a_waiter_cancelled_as_it_is_handed_the_key_passes_it_on() -> None:
    locks = LocalKeyLocks()
    got: list[str] = []
    doomed = anyio.CancelScope()

    async def cancelled_waiter() -> None:
        with doomed:
            await waiter("cancelled")

    async def waiter(name: str) -> None:
        async with locks.hold("k"):
            got.append(name)

    async with anyio.create_task_group() as tg:
        await locks._acquire("k")
        tg.start_soon(cancelled_waiter)
        await wait_all_tasks_blocked()
        tg.start_soon(waiter, "next")
        await wait_all_tasks_blocked()
        locks._release("k")  # hands the key to the first waiter...
        doomed.cancel()  # ...which is cancelled before it runs: it uses it or passes it on
    assert got[-1] == "next" and set(got) <= {"cancelled", "next"}
    assert locks._held == {}


async def test_other_keys_do_not_wait() -> None:
    locks = LocalKeyLocks()
    async with locks.hold("a"), locks.hold("b"):
        assert set(locks._held) == {"a", "b"}
