"""The engine's test workflow, ``ledger``: reserve -> charge -> notify -> audit.

Every step appends one line per *effect* to a file (``Effects``), probing first so a step
that runs again after a crash does not repeat an effect that happened. The input steers the
outcomes: ``charge_failures`` (charge raises on its first n attempts), ``notify_error``,
``reserve_hang`` (reserve never returns: a timeout), ``charge_hang``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import anyio

from orchestrator import SUCCEED, State, StepContext, WorkflowSpec, fail, retry


class Effects:
    """An append-only effects file; ``lines()`` reads it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Every call of a step body, effect or not (in-process runs only).
        self.calls: list[str] = []

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return self.path.read_text().splitlines()

    def once(self, line: str) -> None:
        if line in self.lines():
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _opts(ctx: StepContext) -> dict[str, Any]:
    return ctx.input if isinstance(ctx.input, dict) else {}


async def reserve(ctx: StepContext) -> dict[str, str]:
    fx: Effects = ctx.deps
    fx.calls.append(f"reserve {ctx.attempt}")
    if _opts(ctx).get("reserve_hang"):
        await anyio.sleep_forever()
    token = await ctx.plan("token", lambda: uuid.uuid4().hex)
    ctx.failpoint("before_effect")
    fx.once(f"reserve {ctx.key} {token}")
    ctx.failpoint("after_effect")
    return {"token": token}


async def charge(ctx: StepContext) -> int:
    fx: Effects = ctx.deps
    fx.calls.append(f"charge {ctx.attempt}")
    if _opts(ctx).get("charge_hang"):
        await anyio.sleep_forever()
    if ctx.attempt <= int(_opts(ctx).get("charge_failures", 0)):
        raise ConnectionError(f"bank refused attempt {ctx.attempt}")
    token = ctx.results["reserve"]["token"]
    fx.once(f"charge {ctx.key} {token}")
    ctx.failpoint("after_effect")
    return 42


async def notify(ctx: StepContext) -> str:
    fx: Effects = ctx.deps
    fx.calls.append(f"notify {ctx.attempt}")
    if _opts(ctx).get("notify_error"):
        raise RuntimeError("mail server down")
    fx.once(f"notify {ctx.key}")
    return "sent"


async def audit(ctx: StepContext) -> list[str]:
    fx: Effects = ctx.deps
    fx.calls.append(f"audit {ctx.attempt}")
    fx.once(f"audit {ctx.key}")
    return sorted(ctx.results)


def make_ledger(timeout: float = 10.0) -> WorkflowSpec:
    """The ledger workflow with ``timeout`` on reserve and charge (short in hang tests)."""
    return WorkflowSpec(
        "ledger",
        [
            State(
                "reserve",
                reserve,
                timeout=timeout,
                on={
                    "ok": "charge",
                    "timeout": fail("UNAVAILABLE", "{key} is busy; try again"),
                    "error": fail("INVALID_REQUEST", "cannot reserve {key}"),
                },
            ),
            State(
                "charge",
                charge,
                timeout=timeout,
                effect=True,
                on={
                    "ok": "notify",
                    "timeout": fail("UNAVAILABLE", "bank timed out for {key}"),
                    "error": retry(3, fail("PAYMENT_FAILED", "bank refused {key}"), backoff=0.5),
                },
            ),
            State(
                "notify",
                notify,
                timeout=5,
                on={"ok": "audit", "timeout": "audit", "error": "audit"},
            ),
            State(
                "audit", audit, timeout=5, on={"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED}
            ),
        ],
    )


LEDGER = make_ledger()
