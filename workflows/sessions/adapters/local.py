"""The embedded default host: an OpenClaw-compatible state directory, no live runtime.

Layout (DESIGN §6): ``<state>/agents/<agentId>/sessions/sessions.json`` with transcripts
``<sessionId>.jsonl`` beside it; thread bindings in ``<state>/bindings/thread-bindings.json``
and farewells sent in ``<state>/bindings/farewells.jsonl``. With no agent runtime here, runtime
cleanup and the ACP steps find nothing running and succeed (``--inject`` forces otherwise).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from orchestrator import (
    atomic_write,
    close_quietly,
    ensure_dir,
    failpoint,
    file_ops,
    remove_stale_temps,
)
from orchestrator.errors import CorruptFile, UsageError

from ..config import AGENT_ID, SessionsConfig, load_config
from ..paths import check_safe_dirs
from ..store_file import StoreDoc, read_store
from ..store_lock import hold_store_lock
from ..transcripts import move_no_overwrite, write_header

__all__ = ("LocalHost",)

T = TypeVar("T")


class LocalRuntime:
    """No agent runtime runs beside this tool: there is nothing to stop."""

    async def clear_queues(self, keys: Sequence[str]) -> int:
        return 0

    async def stop_subagents(self, requester_key: str) -> int:
        return 0

    async def abort_run(self, session_id: str) -> bool:
        return False

    async def wait_run_end(self, session_id: str) -> None:
        return None

    async def clear_bootstrap(self, key: str) -> None:
        return None

    async def close_browser_tabs(self, keys: Sequence[str]) -> int:
        return 0


class LocalAcp:
    async def cancel(self, key: str, reason: str) -> None:
        return None

    async def close(self, key: str, reason: str) -> None:
        return None


class LocalHooks:
    """No hook handlers are registered in the embedded host."""

    def has_command_hooks(self, action: str) -> bool:
        return False

    async def command(self, action: str, key: str, context: dict[str, Any]) -> None:
        return None

    def has_subagent_ended(self) -> bool:
        return False

    async def subagent_ended(self, event: dict[str, Any]) -> None:
        return None


class LocalStore:
    def __init__(self, state_dir: Path, *, lock_timeout: float = 10.0) -> None:
        self.state_dir = state_dir
        self.lock_timeout = lock_timeout

    def sessions_dir(self, agent_id: str) -> Path:
        if not AGENT_ID.fullmatch(agent_id):  # never build a path from an unchecked id
            raise UsageError(f"invalid agent id {agent_id!r}")
        path = self.state_dir / "agents" / agent_id / "sessions"
        check_safe_dirs(self.state_dir, path)
        return path

    def store_path(self, agent_id: str) -> Path:
        return self.sessions_dir(agent_id) / "sessions.json"

    def read(self, agent_id: str) -> StoreDoc:
        return read_store(self.store_path(agent_id))

    async def update(
        self,
        agent_id: str,
        mutate: Callable[[StoreDoc], T],
        *,
        before_write: Callable[[T], Awaitable[None]] | None = None,
    ) -> T:
        path = self.store_path(agent_id)
        ensure_dir(path.parent)
        async with hold_store_lock(path, wait=self.lock_timeout):
            remove_stale_temps(path)
            doc = read_store(path)
            result = mutate(doc)
            if doc.changed:
                if before_write is not None:
                    await before_write(result)
                atomic_write(path, doc.encode(), point="store")
            else:
                # Nothing to write, perhaps because an earlier attempt wrote it and then
                # failed (or died) before its directory fsync: sync it before the caller
                # records the change as made.
                file_ops().fsync_dir(path.parent)
            return result


class LocalTranscripts:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def exists(self, path: Path) -> bool:
        return os.path.lexists(path)

    def archive(self, src: Path, dst: Path, new_session_id: str | None) -> str:
        return move_no_overwrite(src, dst, new_session_id=new_session_id)

    def write_header(self, path: Path, session_id: str, at_ms: int) -> bool:
        ensure_dir(path.parent)
        return write_header(path, session_id, at_ms, os.getcwd())

    def legacy_dir(self) -> Path | None:
        legacy = self.state_dir / "sessions"
        # Never followed through a symlink: it could point anywhere.
        return None if os.path.islink(legacy) else legacy


class LocalBindings:
    """Thread bindings in a JSON file; each farewell is logged before its binding goes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.dir = state_dir / "bindings"
        self.path = self.dir / "thread-bindings.json"
        self.farewells = self.dir / "farewells.jsonl"

    async def unbind(self, key: str, *, kind: str, reason: str, farewell_id: str) -> list[str]:
        check_safe_dirs(self.state_dir, self.dir)
        if not self._any():
            # No bindings at all: nothing to release, and no lock (nor its fsync) to take.
            # A binding made after this look is newer than the reset, and not its to end.
            return []
        ensure_dir(self.dir)
        # Other keys' resets may unbind at the same time, in other processes: the file's
        # read-modify-write is done under its own lock file, like the session store's.
        async with hold_store_lock(self.path):
            remove_stale_temps(self.path)
            return self._unbind(key, kind, reason, farewell_id)

    def _any(self) -> bool:
        return os.path.lexists(self.path)

    def _unbind(self, key: str, kind: str, reason: str, farewell_id: str) -> list[str]:
        bindings = self._load()
        mine = [b for b in bindings if str(b.get("targetSessionKey", "")).lower() == key.lower()]
        if not mine:
            if os.path.lexists(self.path):
                # An earlier attempt may have unbound the key without its directory fsync
                # (it failed, or the process died first): the unbind is durable only now.
                file_ops().fsync_dir(self.dir)
            return []
        sent = self._farewells_sent()
        logged_before = False
        for binding in mine:
            if (farewell_id, str(binding.get("threadId"))) in sent:
                logged_before = True
            else:
                self._say_farewell(farewell_id, binding, kind, reason)
        if logged_before:
            # Logged by an earlier attempt whose fsync may have failed (or that died first):
            # synced again, through a new descriptor, before its binding goes.
            self._sync_farewells()
        rest = [b for b in bindings if b not in mine]
        atomic_write(
            self.path,
            orjson.dumps({"bindings": rest}, option=orjson.OPT_INDENT_2),
            point="bindings",
        )
        return [str(b.get("threadId")) for b in mine]

    def _load(self) -> list[dict[str, Any]]:
        try:
            doc = orjson.loads(file_ops().read(self.path))
        except FileNotFoundError:
            return []
        except (OSError, orjson.JSONDecodeError) as exc:
            raise CorruptFile(self.path, str(exc)) from None
        bindings = doc.get("bindings") if isinstance(doc, dict) else None
        if not isinstance(bindings, list):
            raise CorruptFile(self.path, 'expected {"bindings": [...]}')
        return [b for b in bindings if isinstance(b, dict)]

    def _farewells_sent(self) -> set[tuple[str, str]]:
        try:
            lines = file_ops().read(self.farewells).splitlines()
        except FileNotFoundError:
            return set()
        sent = set()
        for line in lines:
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line torn by a crash: that farewell was not recorded
            sent.add((str(item.get("farewellId")), str(item.get("threadId"))))
        return sent

    def _sync_farewells(self) -> None:
        ops = file_ops()
        fd = ops.open(self.farewells, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            ops.fsync(fd)
        finally:
            close_quietly(fd)

    def _say_farewell(
        self, farewell_id: str, binding: dict[str, Any], kind: str, reason: str
    ) -> None:
        ensure_dir(self.dir)
        line = (
            orjson.dumps(
                {
                    "farewellId": farewell_id,
                    "threadId": binding.get("threadId"),
                    "channel": binding.get("channel"),
                    "targetKind": kind,
                    "reason": reason,
                    "at": int(time.time() * 1000),
                }
            )
            + b"\n"
        )
        ops = file_ops()
        fd = ops.open(self.farewells, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW)
        try:
            # A line torn by an earlier failed write is no farewell: cut it off (we hold the
            # bindings lock) so the log stays one whole JSON object a line.
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                whole = os.pread(fd, end, 0).rfind(b"\n") + 1
                ops.truncate(fd, whole)
            ops.write(fd, line)
            ops.fsync(fd)
        finally:
            close_quietly(fd)
        failpoint("farewell.sent")


class LocalHost:
    """The embedded default host on ``state_dir``."""

    def __init__(
        self, state_dir: Path, config: SessionsConfig | None = None, *, lock_wait: float = 10.0
    ) -> None:
        self.state_dir = state_dir
        self.config = config or load_config(state_dir)
        self.runtime = LocalRuntime()
        self.acp = LocalAcp()
        self.hooks = LocalHooks()
        self.bindings = LocalBindings(state_dir)
        self.store = LocalStore(state_dir, lock_timeout=lock_wait)
        self.transcripts = LocalTranscripts(state_dir)

    def now_ms(self) -> int:
        return int(time.time() * 1000)
