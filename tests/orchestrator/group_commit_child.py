"""Child process for the group-commit crash test: N concurrent ledger runs on a file journal.

Prints ``done <run_id>`` (flushed) after each run's result is acknowledged, so the parent
knows which runs the caller was told about before ``ORCHESTRATOR_CRASH_AT`` killed it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from orchestrator import FileJournal, open_engine
from orchestrator.testing import FakeClock
from tests.flows import LEDGER, Effects


async def main(root: Path, runs: int) -> None:
    journal = await FileJournal.open(root / "journal")
    async with open_engine(journal, clock=FakeClock()) as engine:
        engine.register(LEDGER, Effects(root / "effects.log"))

        async def one(i: int) -> None:
            result = await engine.run("ledger", f"k{i}")
            sys.stdout.write(f"done {result.run_id}\n")
            sys.stdout.flush()

        async with anyio.create_task_group() as tg:
            for i in range(runs):
                tg.start_soon(one, i)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]))
