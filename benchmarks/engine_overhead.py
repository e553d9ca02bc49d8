"""Per-run engine overhead against the same steps awaited in a plain loop.

    python benchmarks/engine_overhead.py [--runs N] [--rounds R] [--backend asyncio|trio]

Cases, interleaved round by round (A B C A B C ...) because this machine's speed drifts:
- ``bare``: seven no-op steps awaited in a loop, each under ``anyio.fail_after``;
- ``engine-memory``: the same steps as a workflow on the engine with the memory journal;
- ``engine-file``: the same on the file journal, fsync on (also: fsyncs per run).
Prints a table and writes JSON (schema below) to ``benchmarks/results/engine_overhead.json``:
``{"machine": {...}, "params": {...}, "cases": {name: {"us_per_run": median, "rounds": [...],
"fsyncs_per_run": n|null}}, "ratios": {"engine-memory/bare": x, "engine-file/bare": y}}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import orjson

from orchestrator import (
    SUCCEED,
    Engine,
    FileJournal,
    MemoryJournal,
    State,
    StepContext,
    WorkflowSpec,
)

STEPS = (
    "hook_fired",
    "runtime_cleanup",
    "acp_cancel",
    "acp_close",
    "store_mutation",
    "archive",
    "unbind",
)


async def noop(ctx: StepContext | None = None) -> None:
    return None


def seven_step_spec() -> WorkflowSpec:
    states = []
    for i, name in enumerate(STEPS):
        nxt: Any = STEPS[i + 1] if i + 1 < len(STEPS) else SUCCEED
        states.append(
            State(
                name,
                noop,
                timeout=30,
                on={"ok": nxt, "timeout": nxt, "error": nxt},
                effect=name == "store_mutation",
            )
        )
    return WorkflowSpec("seven", states)


async def bare(runs: int) -> None:
    for _ in range(runs):
        for _name in STEPS:
            with anyio.fail_after(30):
                await noop()


async def engine_runs(engine: Engine, runs: int, prefix: str) -> None:
    for i in range(runs):
        await engine.run("seven", f"{prefix}-{i}")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    spec = seven_step_spec()
    memory_engine = Engine(MemoryJournal())
    memory_engine.register(spec)
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-", dir=args.dir))
    file_journal = await FileJournal.open(tmp / "journal")
    file_engine = Engine(file_journal)
    file_engine.register(spec)

    cases: dict[str, Callable[[int, int], Awaitable[None]]] = {
        "bare": lambda n, r: bare(n),
        "engine-memory": lambda n, r: engine_runs(memory_engine, n, f"m{r}"),
        "engine-file": lambda n, r: engine_runs(file_engine, n, f"f{r}"),
    }
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    file_runs = 0
    await bare(50)  # warm up
    for r in range(args.rounds):
        for name, case in cases.items():
            n = args.runs if name != "engine-file" else args.file_runs
            began = time.perf_counter()
            await case(n, r)
            rounds[name].append((time.perf_counter() - began) / n * 1e6)
            if name == "engine-file":
                file_runs += n
    await file_journal.aclose()
    result_cases = {
        name: {
            "us_per_run": statistics.median(values),
            "rounds": values,
            "fsyncs_per_run": (file_journal.syncs / file_runs) if name == "engine-file" else None,
        }
        for name, values in rounds.items()
    }
    bare_us = result_cases["bare"]["us_per_run"]
    return {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "backend": args.backend,
        },
        "params": {"runs": args.runs, "file_runs": args.file_runs, "rounds": args.rounds},
        "cases": result_cases,
        "ratios": {
            "engine-memory/bare": result_cases["engine-memory"]["us_per_run"] / bare_us,
            "engine-file/bare": result_cases["engine-file"]["us_per_run"] / bare_us,
        },
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--file-runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--dir", default=None, help="where the file journal goes (default: tmp)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "engine_overhead.json"
    )
    args = parser.parse_args()
    report = anyio.run(main, args, backend=args.backend)
    print(f"{'case':<15} {'µs/run (median)':>16} {'fsyncs/run':>11}")
    for name, case in report["cases"].items():
        fsyncs = "" if case["fsyncs_per_run"] is None else f"{case['fsyncs_per_run']:.2f}"
        print(f"{name:<15} {case['us_per_run']:>16.1f} {fsyncs:>11}")
    for name, ratio in report["ratios"].items():
        print(f"{name:<22} {ratio:6.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli()
