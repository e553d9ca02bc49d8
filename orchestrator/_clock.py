"""The default clock and run-id factory."""

from __future__ import annotations

import secrets
import time

import anyio

__all__ = ("RandomIds", "SystemClock")


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class RandomIds:
    """Run ids that sort by creation time: 12 hex digits of milliseconds, 8 of randomness."""

    def new_run_id(self) -> str:
        return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"
