"""The part of OpenClaw's configuration the session workflows read.

From ``<state>/openclaw.json`` when present (plain JSON; OpenClaw also accepts JSON5, which
this reader refuses with a clear error rather than guessing): ``session.mainKey``,
``session.scope``, ``agents.list[].id|default|model`` and ``agents.defaults.model``
(``"provider/model"`` or ``{"primary": "provider/model"}``). Agents also exist by having a
directory under ``<state>/agents/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import orjson

from orchestrator.errors import CorruptFile

__all__ = ("AGENT_ID", "SessionsConfig", "load_config")

#: OpenClaw's built-in default model, used when the configuration names none.
DEFAULT_PROVIDER = "anthropic"
DEFAULT_MODEL = "claude-opus-4-6"

AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)


class SessionsConfig(msgspec.Struct, frozen=True, kw_only=True):
    default_agent: str = "main"
    main_key: str = "main"
    scope: Literal["per-sender", "global"] = "per-sender"
    #: Agents known from the configuration (directories add more; see ``known_agents``).
    agents: tuple[str, ...] = ("main",)
    #: Default (provider, model) per agent id; "*" holds the defaults for every agent.
    models: dict[str, tuple[str | None, str | None]] = {}

    def default_model(self, agent_id: str) -> tuple[str, str]:
        """(provider, model) an agent uses when a session has no override."""
        provider, model = self.models.get(agent_id) or self.models.get("*") or (None, None)
        return (provider or DEFAULT_PROVIDER, model or DEFAULT_MODEL)


def load_config(state_dir: Path) -> SessionsConfig:
    path = state_dir / "openclaw.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return SessionsConfig(agents=tuple(dict.fromkeys(("main", *_agent_dirs(state_dir)))))
    except OSError as exc:
        raise CorruptFile(path, exc.strerror or str(exc)) from exc
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptFile(
            path, f"not plain JSON ({exc})", hint="write it as plain JSON (no comments)"
        ) from None
    if not isinstance(doc, dict):
        raise CorruptFile(path, "the configuration must be a JSON object")
    return _from_doc(doc, state_dir)


def _from_doc(doc: dict[str, Any], state_dir: Path) -> SessionsConfig:
    session = _section(doc, "session")
    agents_doc = _section(doc, "agents")
    listed = [a for a in agents_doc.get("list", []) if isinstance(a, dict) and a.get("id")]
    ids = [_agent_id(a["id"]) for a in listed]
    default = next((_agent_id(a["id"]) for a in listed if a.get("default")), None)
    models: dict[str, tuple[str | None, str | None]] = {}
    fallback = _model_ref(_section(agents_doc, "defaults").get("model"))
    if fallback != (None, None):
        models["*"] = fallback
    for agent in listed:
        ref = _model_ref(agent.get("model"))
        if ref != (None, None):
            models[_agent_id(agent["id"])] = ref
    scope: Literal["per-sender", "global"] = (
        "global" if session.get("scope") == "global" else "per-sender"
    )
    main_key = str(session.get("mainKey") or "main").strip().lower() or "main"
    default_agent = default or (ids[0] if ids else "main")
    known = tuple(dict.fromkeys([*ids, default_agent, *_agent_dirs(state_dir)]))
    return SessionsConfig(
        default_agent=default_agent, main_key=main_key, scope=scope, agents=known, models=models
    )


def _agent_id(value: Any) -> str:
    return str(value).strip().lower()


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def _model_ref(value: Any) -> tuple[str | None, str | None]:
    if isinstance(value, dict):
        value = value.get("primary")
    if not isinstance(value, str) or not value.strip():
        return (None, None)
    provider, sep, model = value.strip().partition("/")
    return (provider, model) if sep else (None, provider)


def _agent_dirs(state_dir: Path) -> tuple[str, ...]:
    try:
        names = sorted(p.name for p in (state_dir / "agents").iterdir() if p.is_dir())
    except OSError:
        return ()
    return tuple(n for n in names if AGENT_ID.fullmatch(n))
