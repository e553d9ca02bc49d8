"""A child process for crash tests: ``python -m tests.crash_child run|recover DIR [KEY INPUT]``.

Runs the ``ledger`` test workflow on the file journal in ``DIR/journal`` with its effects in
``DIR/effects.log``, and prints the result as JSON. ``ORCHESTRATOR_CRASH_AT`` kills it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import msgspec
import orjson

from orchestrator import FileJournal, open_engine
from orchestrator.testing import FakeClock
from tests.flows import LEDGER, Effects


async def main(argv: list[str]) -> int:
    mode, root = argv[0], Path(argv[1])
    journal = await FileJournal.open(root / "journal")
    async with open_engine(journal, clock=FakeClock()) as engine:
        engine.register(LEDGER, Effects(root / "effects.log"))
        if mode == "run":
            result = await engine.run("ledger", argv[2], orjson.loads(argv[3]))
            print(orjson.dumps(msgspec.to_builtins(result)).decode())
        else:
            report = await engine.recover()
            print(orjson.dumps(msgspec.to_builtins(report)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
