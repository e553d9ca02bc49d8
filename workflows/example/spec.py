"""The ``publish_note`` workflow: prepare -> write_note -> notify -> cleanup."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from orchestrator import (
    SUCCEED,
    State,
    StepContext,
    WorkflowSpec,
    atomic_write,
    ensure_dir,
    fail,
    file_ops,
    retry,
)

__all__ = ("PUBLISH_NOTE", "NoteHost")


class NoteHost:
    """Where notes go: ``<root>/notes/<id>.txt``, and one line per notice in ``outbox.log``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notes = root / "notes"
        self.outbox = root / "outbox.log"
        #: Fail the first notification attempt of each run (to show a retry).
        self.flaky_notify = False


async def prepare(ctx: StepContext) -> dict[str, Any]:
    text = (ctx.input or {}).get("text", "")
    if not isinstance(text, str) or not text:
        raise ValueError("input needs a non-empty 'text'")
    note_id = await ctx.plan("note_id", lambda: str(uuid.uuid4()))
    return {"note_id": note_id}


async def write_note(ctx: StepContext) -> str:
    host: NoteHost = ctx.deps
    note_id = ctx.results["prepare"]["note_id"]
    ensure_dir(host.notes)
    path = host.notes / f"{note_id}.txt"
    if not path.exists():  # the effect probes the world: written already means done
        atomic_write(path, ctx.input["text"].encode(), point="write_note")
    return str(path)


async def notify(ctx: StepContext) -> str:
    host: NoteHost = ctx.deps
    if host.flaky_notify and ctx.attempt == 1:
        raise ConnectionError("notice service did not answer")
    line = f"{ctx.key} published {ctx.results['prepare']['note_id']}\n".encode()
    if host.outbox.exists() and line in file_ops().read(host.outbox):
        return "already sent"  # sent before a crash: probing the world keeps it to one
    ops = file_ops()
    fd = ops.open(host.outbox, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        ops.write(fd, line)
        ops.fsync(fd)
    finally:
        ops.close(fd)
    ctx.failpoint("notice_sent")
    return "sent"


async def cleanup(ctx: StepContext) -> None:
    return None


PUBLISH_NOTE = WorkflowSpec(
    "publish_note",
    [
        State(
            "prepare",
            prepare,
            timeout=5,
            on={
                "ok": "write_note",
                "timeout": fail("UNAVAILABLE", "prepare timed out"),
                "error": fail("INVALID_REQUEST", "bad note for {key}"),
            },
        ),
        State(
            "write_note",
            write_note,
            timeout=5,
            effect=True,
            on={
                "ok": "notify",
                "timeout": retry(3, fail("UNAVAILABLE", "could not write the note of {key}")),
                "error": retry(3, fail("UNAVAILABLE", "could not write the note of {key}")),
            },
        ),
        State(
            "notify",
            notify,
            timeout=5,
            on={"ok": "cleanup", "timeout": "cleanup", "error": retry(3, "cleanup", backoff=0.01)},
        ),
        State(
            "cleanup", cleanup, timeout=5, on={"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED}
        ),
    ],
    description="Publish a note once: plan its id, write it atomically, send one notice.",
)
