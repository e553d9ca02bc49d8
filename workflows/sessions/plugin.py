"""The session workflows' entry point: their specs, the local host, and their commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator import Command, DiagramExample, WorkflowSpec
from orchestrator.cli import (
    add_common_options,
    add_run_id_option,
    check_run_id,
    emit_json,
    parse_injections,
)

from ..session_delete import SESSION_DELETE
from ..session_reset import SESSION_RESET
from .adapters.local import LocalHost
from .service import open_session_service

__all__ = ("plugin",)


class SessionsPlugin:
    def specs(self) -> Sequence[WorkflowSpec]:
        return [SESSION_RESET, SESSION_DELETE]

    def deps(self, state_dir: Path) -> LocalHost:
        return LocalHost(state_dir)

    def diagram_examples(self) -> Sequence[DiagramExample]:
        from .examples import reset_unavailable

        return [DiagramExample("session_reset.unavailable", SESSION_RESET.name, reset_unavailable)]

    def commands(self) -> Sequence[Command]:
        from .demo import demo, demo_options

        return [
            Command(
                "reset",
                "reset a session: new session id, old transcript archived",
                _reset_options,
                _reset,
                description="Reset the session KEY of the OpenClaw state directory: run the "
                "hook, quiesce the runtime, close ACP, rotate the entry to a new session id, "
                "archive the old transcript and write the new one's header, release thread "
                "bindings. Every step is journaled; a killed reset finishes with "
                "'orchestrator recover'. Exit 0 ok, 1 failed (e.g. UNAVAILABLE), 2 bad input, "
                "3 unreadable store or journal.",
            ),
            Command(
                "delete",
                "delete a session and archive its transcript",
                _delete_options,
                _delete,
                description="Delete the session KEY (never the main session): cleanup as "
                "for reset, remove the entry and its aliases, archive the transcript as "
                "<file>.deleted.<ts> (unless --keep-transcript), release thread bindings.",
            ),
            Command(
                "demo",
                "show reset, delete, a failure and crash recovery on a demo state",
                demo_options,
                demo,
                description="Create an OpenClaw-shaped state directory (default ./state) "
                "with a few sessions, then: reset one, delete one, fail a reset UNAVAILABLE "
                "through an injected ACP-cancel timeout, and kill a reset mid-archive in a "
                "child process and recover it. Prints what happened and where to look.",
            ),
        ]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", help="the session key (e.g. agent:main:main, main, discord:group:dev)")
    p.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="STEP=OUTCOME",
        help="force a step's outcome (ok, timeout, error) without running it "
        "(e.g. acp_cancel=timeout); repeatable",
    )
    p.add_argument(
        "--store-lock-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for another process's sessions.json.lock (default: 10)",
    )
    add_run_id_option(p)
    add_common_options(p)


def _reset_options(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--reason",
        choices=["new", "reset"],
        default="reset",
        help="what the command hook is told (default: reset)",
    )


def _delete_options(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--keep-transcript", action="store_true", help="leave the transcript file where it is"
    )
    p.add_argument("--no-hooks", action="store_true", help="do not fire subagent_ended")
    p.add_argument(
        "--client-mode",
        metavar="MODE",
        help="the caller's client mode (webchat callers are refused)",
    )


async def _reset(args: argparse.Namespace) -> int:
    force = parse_injections(args.inject)
    run_id = check_run_id(args.run_id)
    async with open_session_service(
        args.state_dir, lock_wait=args.store_lock_wait, journal_url=args.journal
    ) as service:
        reply = await service.reset(
            args.key, reason=args.reason, command_source="cli:reset", force=force, run_id=run_id
        )
    return _report(reply, args.json, "reset")


async def _delete(args: argparse.Namespace) -> int:
    force = parse_injections(args.inject)
    run_id = check_run_id(args.run_id)
    async with open_session_service(
        args.state_dir, lock_wait=args.store_lock_wait, journal_url=args.journal
    ) as service:
        reply = await service.delete(
            args.key,
            delete_transcript=not args.keep_transcript,
            emit_hooks=not args.no_hooks,
            client_mode=args.client_mode,
            command_source="cli:delete",
            force=force,
            run_id=run_id,
        )
    return _report(reply, args.json, "delete")


def exit_code(reply: dict[str, Any]) -> int:
    if reply["ok"]:
        return 0
    return 2 if reply["error"]["code"] == "INVALID_REQUEST" else 1


def _report(reply: dict[str, Any], as_json: bool, what: str) -> int:
    if as_json:
        emit_json(reply)
    elif reply["ok"]:
        print(describe(reply, what))
    else:
        print(f"orchestrator: {describe(reply, what)}", file=sys.stderr)
    return exit_code(reply)


def describe(reply: dict[str, Any], what: str) -> str:
    """One line for a person; keys and stored data are cleaned of control characters."""
    if not reply["ok"]:
        run = f" (run {reply['run_id']})" if reply.get("run_id") else ""
        text = f"{what} failed{run}: {reply['error']['code']}: {reply['error']['message']}"
    elif what == "reset":
        entry = reply["entry"] or {}
        new_id = entry.get("sessionId")
        text = f"reset {reply['key']}: new session {new_id} (run {reply['run_id']})"
    else:
        archived = ", ".join(reply["archived"]) or "nothing archived"
        state = "deleted" if reply["deleted"] else "no such session (nothing deleted)"
        text = f"delete {reply['key']}: {state}; {archived} (run {reply['run_id']})"
    return _clean(text)


def _clean(text: str) -> str:
    """No terminal escapes, line breaks or bidi controls reach the terminal (``isprintable``
    is False for every one of them, C1 controls included)."""
    return "".join(c if c.isprintable() else "?" for c in text)


plugin = SessionsPlugin()
