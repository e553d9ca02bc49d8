"""``orchestrator demo``: the reset and delete flows on a small OpenClaw-shaped state directory."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import orjson

from orchestrator import ENV_CRASH_AT, Engine, FileJournal, atomic_write, ensure_dir, open_engine
from orchestrator.cli import DEFAULT_STATE_DIR, journal_dir, print_history
from orchestrator.errors import UsageError

from .adapters.local import LocalHost
from .service import SessionService
from .transcripts import iso_utc

__all__ = ("demo", "demo_options", "seed_state")

MARKER = ".orchestrator-demo"
NOW = 1_780_000_000_000  # a fixed creation time, 2026-05-28, so the seeded store reads the same


def demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help="where the demo state goes (default ./state; recreated on each run)",
    )
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)


def _prepare(state_dir: Path) -> None:
    if state_dir.exists() and any(state_dir.iterdir()):
        if not (state_dir / MARKER).exists():
            raise UsageError(
                f"{state_dir} exists and is not a demo directory; the demo recreates its state "
                "directory, so pass --state-dir with a new or demo path"
            )
        shutil.rmtree(state_dir)
    ensure_dir(state_dir)
    (state_dir / MARKER).write_text("created by 'orchestrator demo'; safe to delete\n")


def _session(sessions: Path, key_label: str, age_min: int, **extra: Any) -> dict[str, Any]:
    sid = str(uuid.uuid4())
    path = sessions / f"{sid}.jsonl"
    at = NOW - age_min * 60_000
    lines = [{"type": "session", "version": 3, "id": sid, "timestamp": iso_utc(at), "cwd": "/"}]
    lines += [
        {"type": "message", "role": r, "text": f"{key_label}: {r} message {i}"}
        for i, r in enumerate(["user", "assistant", "user", "assistant"])
    ]
    atomic_write(path, b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return {
        "sessionId": sid,
        "sessionFile": str(path.resolve()),
        "updatedAt": at,
        "model": "claude-opus-4-6",
        "modelProvider": "anthropic",
        "inputTokens": 1200,
        "outputTokens": 800,
        "totalTokens": 2000,
        "compactionCount": 1,
        **extra,
    }


def seed_state(state_dir: Path) -> dict[str, dict[str, Any]]:
    """An OpenClaw-shaped store with four sessions, their transcripts and two thread bindings."""
    sessions = state_dir / "agents" / "main" / "sessions"
    ensure_dir(sessions)
    store = {
        "agent:main:main": _session(sessions, "main", 5, label="Main", thinkingLevel="high"),
        "agent:main:discord:channel:123": _session(
            sessions,
            "discord",
            30,
            label="#ops",
            lastChannel="discord",
            lastTo="channel:123",
            acp={"backend": "acpx", "agent": "codex", "state": "idle"},
        ),
        "agent:main:telegram:direct:42": _session(sessions, "telegram", 60, chatType="direct"),
        # A legacy, unprefixed, mixed-case key: resolved case-insensitively, pruned on reset.
        "Discord:Group:Dev": _session(sessions, "dev group", 90, groupActivation="mention"),
    }
    atomic_write(sessions / "sessions.json", orjson.dumps(store, option=orjson.OPT_INDENT_2))
    ensure_dir(state_dir / "bindings")
    bindings = {
        "bindings": [
            {"threadId": "t-777", "channel": "discord", "targetSessionKey": "agent:main:main"},
            {
                "threadId": "t-888",
                "channel": "discord",
                "targetSessionKey": "agent:main:telegram:direct:42",
            },
        ]
    }
    atomic_write(
        state_dir / "bindings" / "thread-bindings.json",
        orjson.dumps(bindings, option=orjson.OPT_INDENT_2),
    )
    return store


async def demo(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    _prepare(state_dir)
    store = seed_state(state_dir)
    sessions = state_dir / "agents" / "main" / "sessions"
    print(f"demo state directory: {state_dir}  (store: {sessions / 'sessions.json'})")
    print(f"  {len(store)} sessions: {', '.join(store)}\n")
    journal = await FileJournal.open(journal_dir(state_dir))
    async with open_engine(journal) as engine:
        service = SessionService(engine, LocalHost(state_dir))
        await _step_reset(service, store)
        await _step_delete(service, sessions)
        await _step_unavailable(service, state_dir)
    await _step_crash(state_dir)
    print("\nwhere to look:")
    print(f"  store        {sessions / 'sessions.json'}")
    print(f"  transcripts  {sessions}/  (*.reset.* and *.deleted.* are archives)")
    print(f"  journal      {journal_dir(state_dir)}/  (one .jrnl file per process)")
    print(f"  runs         orchestrator runs list --state-dir {state_dir}")
    print(f"               orchestrator runs show RUN_ID --state-dir {state_dir}")
    print(f"  a run drawn  orchestrator diagram --run RUN_ID --state-dir {state_dir}")
    print(f"  try          orchestrator reset main --state-dir {state_dir} --json")
    return 0


async def _step_reset(service: SessionService, store: dict[str, Any]) -> None:
    old = store["agent:main:main"]["sessionId"]
    print("1. reset 'main' (the main session, with a thread binding)")
    reply = await service.reset("main", reason="new", command_source="demo")
    entry = reply["entry"]
    print(
        f"   ok: {reply['key']} {old[:8]}... -> {entry['sessionId'][:8]}...; "
        f"kept label={entry.get('label')!r}, thinkingLevel={entry.get('thinkingLevel')!r}; "
        f"dropped compactionCount; tokens zeroed"
    )
    _timeline(service.engine, reply["run_id"])


async def _step_delete(service: SessionService, sessions: Path) -> None:
    print("\n2. delete 'agent:main:telegram:direct:42'")
    reply = await service.delete("agent:main:telegram:direct:42", command_source="demo")
    names = [Path(p).name for p in reply["archived"]]
    print(f"   ok: deleted={reply['deleted']}, transcript archived as {names}")
    refused = await service.delete("agent:main:main", command_source="demo")
    print(f"   deleting the main session is refused: {refused['error']['message']}")


async def _step_unavailable(service: SessionService, state_dir: Path) -> None:
    print(
        "\n3. reset the ACP session with its cancel forced to time out "
        "(--inject acp_cancel=timeout)"
    )
    store = state_dir / "agents" / "main" / "sessions" / "sessions.json"
    before = store.read_bytes()
    reply = await service.reset(
        "agent:main:discord:channel:123", command_source="demo", force={"acp_cancel": "timeout"}
    )
    err = reply["error"]
    same = "unchanged" if store.read_bytes() == before else "CHANGED"
    print(f"   failed: {err['code']} {err['message']!r}; store {same}")


async def _step_crash(state_dir: Path) -> None:
    print(
        "\n4. reset 'discord:group:dev' in a child process killed right after the old "
        "transcript is renamed (ORCHESTRATOR_CRASH_AT=archive.renamed)"
    )
    child = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "reset",
            "discord:group:dev",
            "--state-dir",
            str(state_dir),
        ],
        env={**os.environ, ENV_CRASH_AT: "archive.renamed"},
        check=False,
    )
    print(f"   child ended with status {child.returncode} (-9: killed by SIGKILL)")
    journal = await FileJournal.open(journal_dir(state_dir))
    async with open_engine(journal) as engine:
        service = SessionService(engine, LocalHost(state_dir))
        report = await engine.recover(requested_by="demo:recover")
        for result in report.resumed:
            entry = result.results["store_mutation"]["entry"]
            print(
                f"   recovered run {result.run_id}: {result.status}; {result.key} is now "
                f"session {entry['sessionId'][:8]}..., header written, old transcript "
                "archived once"
            )
            _timeline(service.engine, result.run_id)


def _timeline(engine: Engine, run_id: str) -> None:
    history = engine.journal.history(run_id)
    if history is not None:
        print_history(history.records)
