"""State-directory helpers for the crash-twice campaign: the CLI in a child process, copies of
a seeded state directory, and readings of what a reset or delete left behind.

The approach is the one of ``tests/workflows/test_cli_sessions.py`` (seed once, copy per case,
mask minted ids, timestamps and the state directory's own path); this module adds what the
campaign needs on top: arrival-counted kill points, journal readings that never repair, and
one ``Outcome`` per state directory that every invariant is checked against.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson

from orchestrator import EffectPlanned, FileJournal, Record, RunFinished, StepFinished, StepStarted

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = Path("agents/main/sessions")
JOURNAL = Path("orchestrator/journal")
#: ``<file>.<reason>.<ISO-8601 UTC with ':' -> '-'>``
ARCHIVE_SUFFIX = re.compile(r"\.(reset|deleted)\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$")


@dataclass(frozen=True)
class Flow:
    """One workflow the campaign crashes: how to ask for it and what it must leave."""

    name: str
    argv: tuple[str, ...]
    #: The canonical session key the run works on.
    key: str
    workflow: str
    #: The archive reason in the old transcript's new name.
    reason: str
    #: The thread bound to the session in the seeded state (one farewell expected).
    thread: str


RESET = Flow("reset", ("reset", "main"), "agent:main:main", "session_reset", "reset", "t-777")
DELETE = Flow(
    "delete",
    ("delete", "agent:main:telegram:direct:42"),
    "agent:main:telegram:direct:42",
    "session_delete",
    "deleted",
    "t-888",
)


def cli(
    state: Path,
    *argv: str,
    crash_at: str | None = None,
    trace: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``orchestrator ARGV --state-dir STATE`` in a child process, optionally killed or traced."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_CRASH")}
    if crash_at:
        env["ORCHESTRATOR_CRASH_AT"] = crash_at
    if trace:
        env["ORCHESTRATOR_CRASH_TRACE"] = str(trace)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *argv, "--state-dir", str(state)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def fresh(template: Path, where: Path) -> Path:
    """A copy of the seeded ``template`` at ``where`` (its absolute paths pointed at the copy)."""
    shutil.copytree(template, where, symlinks=True)
    store = where / SESSIONS / "sessions.json"
    store.write_bytes(store.read_bytes().replace(str(template).encode(), str(where).encode()))
    return where


def restore(snapshot: Path, where: Path) -> None:
    """Put a copy of ``snapshot`` back at ``where`` (the path the journal's records name)."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(snapshot, where, symlinks=True)


def counted(points: Iterable[str]) -> list[str]:
    """``point#n`` for the n-th arrival at each point, in the order they were reached."""
    arrivals: collections.Counter[str] = collections.Counter()
    out = []
    for point in points:
        arrivals[point] += 1
        out.append(f"{point}#{arrivals[point]}")
    return out


def read_trace(trace: Path) -> list[str]:
    return trace.read_text().splitlines() if trace.exists() else []


def store_of(state: Path, *, masked: bool = False) -> dict[str, Any]:
    data = (state / SESSIONS / "sessions.json").read_bytes()
    if masked:
        data = data.replace(str(state).encode(), b"<state>")
    return orjson.loads(data)  # type: ignore[no-any-return]


def files_of(state: Path) -> dict[str, bytes]:
    """The sessions directory's files (hidden ones too), the state directory's path masked."""
    mask = str(state).encode()
    return {
        p.name: p.read_bytes().replace(mask, b"<state>")
        for p in (state / SESSIONS).iterdir()
        if p.is_file()
    }


def normalized(store: dict[str, Any], key: str) -> dict[str, Any]:
    """The store with the minted id, file and timestamp of ``key``'s entry blanked."""
    out = {k: dict(v) for k, v in store.items()}
    if key in out:
        for field in ("sessionId", "sessionFile", "updatedAt"):
            out[key][field] = "<minted>"
    return out


def masked_names(names: Iterable[str], new_id: str | None) -> list[str]:
    """File names with the minted session id and archive timestamps masked, sorted."""
    out = []
    for name in names:
        if new_id:
            name = name.replace(new_id, "<new>")
        out.append(ARCHIVE_SUFFIX.sub(r".\1.<ts>", name))
    return sorted(out)


def leftovers(state: Path) -> list[str]:
    """Temporary files anywhere, and lock files other than the journal's reusable key locks."""
    locks = state / JOURNAL / "locks"
    return sorted(
        str(p.relative_to(state))
        for p in state.rglob("*")
        if p.name.endswith(".tmp") or (p.name.endswith(".lock") and p.parent != locks)
    )


def journal_runs(state: Path) -> dict[str, list[Record]]:
    """Every run's records, read without repairing anything (a torn tail is left as it is)."""

    async def read() -> dict[str, list[Record]]:
        journal = await FileJournal.open(state / JOURNAL, repair=False)
        return {h.run_id: list(h.records) for h in journal.runs()}

    return anyio.run(read)


def any_run_finished(runs: dict[str, list[Record]]) -> bool:
    return any(isinstance(r, RunFinished) for records in runs.values() for r in records)


def planned(runs: dict[str, list[Record]], name: str) -> list[Any]:
    return [
        r.value
        for records in runs.values()
        for r in records
        if isinstance(r, EffectPlanned) and r.name == name
    ]


def acknowledged_kept(earlier: dict[str, list[Record]], final: dict[str, list[Record]]) -> str:
    """Why ``final`` lost or redid what ``earlier`` (a reading after a crash) acknowledged;
    empty if it did not.

    Every record journaled before the crash is still there, unchanged; a step whose ``ok``
    was journaled never starts again; a planned value is never planned anew.
    """
    for run_id, records in earlier.items():
        later = final.get(run_id)
        if later is None:
            return f"run {run_id} vanished from the journal"
        by_seq = {r.seq: r for r in later}
        for record in records:
            if by_seq.get(record.seq) != record:
                what = type(record).__name__
                return f"run {run_id}: record {record.seq} ({what}) changed or lost"
        for done in records:
            if isinstance(done, StepFinished) and done.outcome == "ok":
                again = [
                    r.seq
                    for r in later
                    if isinstance(r, StepStarted) and r.step == done.step and r.seq > done.seq
                ]
                if again:
                    return f"run {run_id}: step {done.step} ran again after its ok (seq {again})"
        names = [r.name for r in later if isinstance(r, EffectPlanned)]
        if len(names) != len(set(names)):
            return f"run {run_id}: a value was planned twice: {names}"
    return ""
