"""Group commit: concurrent runs share writes and fsyncs and lose nothing acknowledged."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from orchestrator import Engine, FileJournal, RunFinished, open_engine
from orchestrator.testing import FakeClock
from tests.flows import LEDGER, Effects
from workflows.sessions.adapters.memory import MemoryHost
from workflows.sessions.service import SessionService

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[True, False], ids=["fsync-in-thread", "fsync-inline"])
def sync_in_thread(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(FileJournal, "sync_in_thread", request.param)
    return bool(request.param)


async def test_concurrent_runs_share_fsyncs_and_all_survive(
    tmp_path: Path, sync_in_thread: bool
) -> None:
    runs = 64
    journal = await FileJournal.open(tmp_path / "journal")
    async with open_engine(journal, clock=FakeClock()) as engine:
        engine.register(LEDGER, Effects(tmp_path / "fx"))
        results = []

        async def one(i: int) -> None:
            results.append(await engine.run("ledger", f"k{i}"))

        async with anyio.create_task_group() as tg:
            for i in range(runs):
                tg.start_soon(one, i)
    assert len(results) == runs and all(r.ok for r in results)
    # Each ledger run makes 3 durable appends; alone, that is 3 fsyncs a run.
    assert journal.syncs < runs * 3 / 2, journal.syncs
    reread = await FileJournal.open(tmp_path / "journal")
    finished = [h for h in reread.runs() if h.finished is not None]
    assert sorted(h.run_id for h in finished) == sorted(r.run_id for r in results)


async def test_a_sequential_session_reset_costs_at_most_3_journal_fsyncs(
    tmp_path: Path, sync_in_thread: bool
) -> None:
    journal = await FileJournal.open(tmp_path / "journal")
    host = MemoryHost()
    host.store.put("main", {"agent:main:main": {"sessionId": "s1", "updatedAt": 1}})
    service = SessionService(Engine(journal, clock=FakeClock()), host)
    before = journal.syncs
    for _ in range(5):
        assert (await service.reset("main"))["ok"]
    per_reset = (journal.syncs - before) / 5
    assert per_reset <= 3, per_reset
    await journal.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_crash_mid_batch_loses_no_acknowledged_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_CRASH")}
    env["ORCHESTRATOR_CRASH_AT"] = "run_finished#20"
    done = await anyio.run_process(
        [sys.executable, "-m", "tests.orchestrator.group_commit_child", str(tmp_path), "64"],
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == -9, done.stderr.decode()
    acknowledged = {line.split()[1] for line in done.stdout.decode().splitlines()}
    assert 0 < len(acknowledged) < 64
    journal = await FileJournal.open(tmp_path / "journal")
    finished = {h.run_id for h in journal.runs() if isinstance(h.records[-1], RunFinished)}
    assert acknowledged <= finished  # every run the caller heard of is in the journal
    engine = Engine(journal, clock=FakeClock())
    engine.register(LEDGER, Effects(tmp_path / "effects.log"))
    report = await engine.recover()
    assert not report.refused
    assert all(h.finished is not None for h in journal.runs())
    effects = Effects(tmp_path / "effects.log").lines()
    assert len([e for e in effects if e.startswith("audit ")]) == len(list(journal.runs()))
