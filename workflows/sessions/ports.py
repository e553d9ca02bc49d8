"""What the session workflows need from a host, as small Protocols (OpenClaw spec §6).

Three adapter sets implement them: ``adapters.memory`` (tests: records every call; any
operation can be made to hang, fail or succeed), ``adapters.local`` (an OpenClaw-compatible
state directory on disk, with no live agent runtime) and fault injection, which the engine
does for any of them (``--inject STEP=OUTCOME`` forces a step's outcome).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .config import SessionsConfig
from .store_file import StoreDoc

__all__ = (
    "AcpManager",
    "HookBus",
    "Runtime",
    "SessionHost",
    "SessionStore",
    "ThreadBindings",
    "Transcripts",
)

T = TypeVar("T")


class Runtime(Protocol):
    """The live agent runtime: queues, subagents, embedded runs, caches, browser tabs."""

    async def clear_queues(self, keys: Sequence[str]) -> int:
        """Drop queued follow-ups for ``keys``; returns how many were dropped."""
        ...

    async def stop_subagents(self, requester_key: str) -> int:
        """Abort every unfinished subagent run spawned by ``requester_key`` (recursively)."""
        ...

    async def abort_run(self, session_id: str) -> bool:
        """Signal the embedded run of ``session_id`` to stop; False if none is active."""
        ...

    async def wait_run_end(self, session_id: str) -> None:
        """Return once no run of ``session_id`` is active (the step's timeout bounds it)."""
        ...

    async def clear_bootstrap(self, key: str) -> None: ...

    async def close_browser_tabs(self, keys: Sequence[str]) -> int:
        """Close the tracked tabs of ``keys`` (at most once: they leave the registry first)."""
        ...


class AcpManager(Protocol):
    async def cancel(self, key: str, reason: str) -> None: ...

    async def close(self, key: str, reason: str) -> None: ...


class HookBus(Protocol):
    def has_command_hooks(self, action: str) -> bool: ...

    async def command(self, action: str, key: str, context: dict[str, Any]) -> None:
        """The internal ``command:<action>`` hook (handlers in order)."""
        ...

    def has_subagent_ended(self) -> bool: ...

    async def subagent_ended(self, event: dict[str, Any]) -> None: ...


class ThreadBindings(Protocol):
    async def unbind(self, key: str, *, kind: str, reason: str, farewell_id: str) -> list[str]:
        """Remove ``key``'s thread bindings, saying farewell in each thread at most once.

        ``farewell_id`` identifies this request: a farewell already sent under it is not
        sent again. Returns the bindings removed (none if the key was not bound).
        """
        ...


class SessionStore(Protocol):
    def store_path(self, agent_id: str) -> Path: ...

    def sessions_dir(self, agent_id: str) -> Path: ...

    def read(self, agent_id: str) -> StoreDoc:
        """The agent's store without the lock (may be stale by the time it is used)."""
        ...

    async def update(
        self,
        agent_id: str,
        mutate: Callable[[StoreDoc], T],
        *,
        before_write: Callable[[T], Awaitable[None]] | None = None,
    ) -> T:
        """Under the store lock: read, ``mutate``, and if it changed anything, await
        ``before_write(result)`` (to journal what is about to change) and write atomically."""
        ...


class Transcripts(Protocol):
    def exists(self, path: Path) -> bool: ...

    def archive(self, src: Path, dst: Path, new_session_id: str | None) -> str:
        """Move ``src`` to ``dst`` (never overwriting); the outcome word."""
        ...

    def write_header(self, path: Path, session_id: str, at_ms: int) -> bool: ...

    def legacy_dir(self) -> Path | None:
        """The legacy transcript directory (``<state>/sessions``), if any."""
        ...


class SessionHost(Protocol):
    """Everything the reset and delete workflows touch."""

    @property
    def config(self) -> SessionsConfig: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def acp(self) -> AcpManager: ...

    @property
    def hooks(self) -> HookBus: ...

    @property
    def bindings(self) -> ThreadBindings: ...

    @property
    def store(self) -> SessionStore: ...

    @property
    def transcripts(self) -> Transcripts: ...

    def now_ms(self) -> int: ...
