"""Peak RSS with N runs in flight: ``python benchmarks/rss_child.py N`` prints JSON.

Each run's one step waits on an event, so all N are in flight at once (engine, memory
journal, one task each); the peak RSS growth over the idle process is reported.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import anyio
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator import SUCCEED, MemoryJournal, State, StepContext, WorkflowSpec, open_engine


def peak_kib() -> int:
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives fork and exec, so a child would
    # report its parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def main(runs: int) -> None:
    release = anyio.Event()
    inside = 0
    all_in = anyio.Event()

    async def hold(ctx: StepContext) -> None:
        nonlocal inside
        inside += 1
        if inside == runs:
            all_in.set()
        await release.wait()

    spec = WorkflowSpec(
        "hold", [State("hold", hold, 600, on={"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED})]
    )
    base = peak_kib()
    async with open_engine(MemoryJournal()) as engine:
        engine.register(spec)
        handles = [engine.start("hold", f"k{i}") for i in range(runs)]
        await all_in.wait()
        peak = peak_kib()
        release.set()
        results = [await h.wait() for h in handles]
    assert all(r.ok for r in results)
    grown = (peak - base) / 1024
    print(
        orjson.dumps(
            {
                "value": grown,
                "unit": "MiB",
                "runs": runs,
                "kib_per_run": (peak - base) / runs,
                "peak_mib": peak / 1024,
            }
        ).decode()
    )


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]))
