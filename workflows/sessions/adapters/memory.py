"""An in-memory host for tests: records every call; any operation can hang, fail or succeed.

``host.controls.modes["acp.cancel"] = "hang"`` makes that operation wait forever (so the
step's timeout fires); ``"fail"`` makes it raise. ``host.controls.calls`` lists every call in
order. The store and transcripts live in dicts of bytes, parsed and encoded exactly as the
local adapter does, so the data model is the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson

from ..config import SessionsConfig
from ..store_file import StoreDoc, parse_store
from ..transcripts import HEADER_VERSION, iso_utc

__all__ = ("Controls", "MemoryHost")

T = TypeVar("T")
ROOT = Path("/memory")


class Controls:
    def __init__(self) -> None:
        #: Operation name -> "ok" (default), "hang" or "fail".
        self.modes: dict[str, str] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def gate(self, op: str, *args: Any) -> None:
        self.calls.append((op, args))
        mode = self.modes.get(op, "ok")
        if mode == "hang":
            await anyio.sleep_forever()
        if mode == "fail":
            raise RuntimeError(f"{op} failed (memory host)")

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]


class MemoryRuntime:
    def __init__(self, controls: Controls) -> None:
        self.c = controls
        self.queues: dict[str, int] = {}
        self.subagents: dict[str, int] = {}
        self.active_runs: set[str] = set()
        self.tabs: dict[str, int] = {}
        self._run_ended = anyio.Event()

    def end_run(self, session_id: str) -> None:
        self.active_runs.discard(session_id)
        self._run_ended.set()
        self._run_ended = anyio.Event()

    async def clear_queues(self, keys: Sequence[str]) -> int:
        await self.c.gate("runtime.clear_queues", tuple(keys))
        return sum(self.queues.pop(k, 0) for k in keys)

    async def stop_subagents(self, requester_key: str) -> int:
        await self.c.gate("runtime.stop_subagents", requester_key)
        return self.subagents.pop(requester_key, 0)

    async def abort_run(self, session_id: str) -> bool:
        await self.c.gate("runtime.abort_run", session_id)
        return session_id in self.active_runs

    async def wait_run_end(self, session_id: str) -> None:
        await self.c.gate("runtime.wait_run_end", session_id)
        while session_id in self.active_runs:
            await self._run_ended.wait()

    async def clear_bootstrap(self, key: str) -> None:
        await self.c.gate("runtime.clear_bootstrap", key)

    async def close_browser_tabs(self, keys: Sequence[str]) -> int:
        await self.c.gate("runtime.close_browser_tabs", tuple(keys))
        return sum(self.tabs.pop(k, 0) for k in keys)


class MemoryAcp:
    def __init__(self, controls: Controls) -> None:
        self.c = controls

    async def cancel(self, key: str, reason: str) -> None:
        await self.c.gate("acp.cancel", key, reason)

    async def close(self, key: str, reason: str) -> None:
        await self.c.gate("acp.close", key, reason)


class MemoryHooks:
    def __init__(self, controls: Controls) -> None:
        self.c = controls
        self.command_handlers = False
        self.subagent_handlers = False
        self.events: list[tuple[str, Any]] = []

    def has_command_hooks(self, action: str) -> bool:
        return self.command_handlers

    async def command(self, action: str, key: str, context: dict[str, Any]) -> None:
        self.events.append((f"command:{action}", {"key": key, **context}))
        await self.c.gate("hooks.command", action, key)

    def has_subagent_ended(self) -> bool:
        return self.subagent_handlers

    async def subagent_ended(self, event: dict[str, Any]) -> None:
        self.events.append(("subagent_ended", event))
        await self.c.gate("hooks.subagent_ended", event["targetSessionKey"])


class MemoryBindings:
    def __init__(self, controls: Controls) -> None:
        self.c = controls
        #: Session key -> bound thread ids.
        self.threads: dict[str, list[str]] = {}
        #: (farewell id, thread id) of every farewell sent.
        self.farewells: list[tuple[str, str]] = []

    async def unbind(self, key: str, *, kind: str, reason: str, farewell_id: str) -> list[str]:
        await self.c.gate("bindings.unbind", key, kind, reason)
        bound = self.threads.get(key, [])
        for thread in bound:
            if (farewell_id, thread) not in self.farewells:
                self.farewells.append((farewell_id, thread))
        self.threads.pop(key, None)
        return list(bound)


class MemoryStore:
    def __init__(self, controls: Controls) -> None:
        self.c = controls
        self.files: dict[str, bytes] = {}
        self.writes = 0
        self._locks: dict[str, anyio.Lock] = {}

    def sessions_dir(self, agent_id: str) -> Path:
        return ROOT / "agents" / agent_id / "sessions"

    def store_path(self, agent_id: str) -> Path:
        return self.sessions_dir(agent_id) / "sessions.json"

    def put(self, agent_id: str, store: dict[str, Any]) -> None:
        self.files[agent_id] = orjson.dumps(store, option=orjson.OPT_INDENT_2)

    def entries(self, agent_id: str = "main") -> dict[str, Any]:
        data = self.files.get(agent_id)
        return {} if data is None else orjson.loads(data)

    def read(self, agent_id: str) -> StoreDoc:
        data = self.files.get(agent_id)
        return StoreDoc.empty() if data is None else parse_store(data, self.store_path(agent_id))

    async def update(
        self,
        agent_id: str,
        mutate: Callable[[StoreDoc], T],
        *,
        before_write: Callable[[T], Awaitable[None]] | None = None,
    ) -> T:
        async with self._locks.setdefault(agent_id, anyio.Lock()):
            await self.c.gate("store.update", agent_id)
            doc = self.read(agent_id)
            result = mutate(doc)
            if doc.changed:
                if before_write is not None:
                    await before_write(result)
                self.files[agent_id] = doc.encode()
                self.writes += 1
            return result


class MemoryTranscripts:
    def __init__(self, controls: Controls) -> None:
        self.c = controls
        self.files: dict[Path, bytes] = {}

    def exists(self, path: Path) -> bool:
        return path in self.files

    def archive(self, src: Path, dst: Path, new_session_id: str | None) -> str:
        self.c.calls.append(("transcripts.archive", (src, dst)))
        if self.c.modes.get("transcripts.archive") == "fail":
            raise OSError(f"cannot rename {src} (memory host)")
        if src in self.files and new_session_id is not None and self._id(src) == new_session_id:
            return "kept_new"
        if src in self.files and dst in self.files:
            return "kept_both"
        if src not in self.files:
            return "already_moved" if dst in self.files else "missing"
        self.files[dst] = self.files.pop(src)
        return "moved"

    def _id(self, path: Path) -> str | None:
        try:
            header = orjson.loads(self.files[path].split(b"\n", 1)[0])
        except orjson.JSONDecodeError:
            return None
        return header.get("id") if isinstance(header, dict) else None

    def write_header(self, path: Path, session_id: str, at_ms: int) -> bool:
        self.c.calls.append(("transcripts.write_header", (path, session_id)))
        if path in self.files:
            return False
        header = {
            "type": "session",
            "version": HEADER_VERSION,
            "id": session_id,
            "timestamp": iso_utc(at_ms),
            "cwd": "/",
        }
        self.files[path] = orjson.dumps(header) + b"\n"
        return True

    def legacy_dir(self) -> Path | None:
        return ROOT / "sessions"


class MemoryHost:
    """Every port in memory; ``controls`` steers and records them."""

    def __init__(self, config: SessionsConfig | None = None, *, now_ms: int = 1_780_000_000_000):
        self.config = config or SessionsConfig()
        self.controls = Controls()
        self.runtime = MemoryRuntime(self.controls)
        self.acp = MemoryAcp(self.controls)
        self.hooks = MemoryHooks(self.controls)
        self.bindings = MemoryBindings(self.controls)
        self.store = MemoryStore(self.controls)
        self.transcripts = MemoryTranscripts(self.controls)
        self.clock_ms = now_ms

    def now_ms(self) -> int:
        self.clock_ms += 1
        return self.clock_ms
