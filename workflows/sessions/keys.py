"""OpenClaw session keys: canonical form, main-key aliases, the store keys of a target.

Pure functions, no I/O (spec §3.3, as OpenClaw 2026.3 computes them):

- canonical form: trim and lowercase; ``global`` and ``unknown`` are special; ``main``, the
  configured main key, ``agent:<a>:main`` and ``agent:<a>:<mainKey>`` all name the agent's
  main session (``global`` in global scope); an unprefixed key gets the default agent's
  prefix (``discord:group:dev`` -> ``agent:main:discord:group:dev``);
- store keys: the canonical key, the raw key as given, and every key in the store equal to
  either ignoring case (plus ``agent:<a>:main`` when the target is that agent's main
  session): all the names one session may be stored under. A mutation prunes all but the
  canonical one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.errors import UsageError

from .config import SessionsConfig

__all__ = (
    "Target",
    "canonical_key",
    "is_subagent_key",
    "main_session_key",
    "normalize_agent_id",
    "resolve_target",
    "store_keys",
)

_AGENT_OK = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.IGNORECASE | re.ASCII)
_AGENT_BAD_RUN = re.compile(r"[^a-z0-9_-]+")
MAX_KEY_LENGTH = 512


def normalize_agent_id(value: str) -> str:
    value = value.strip()
    if not value:
        return "main"
    if _AGENT_OK.fullmatch(value):
        return value.lower()
    cleaned = _AGENT_BAD_RUN.sub("-", value.lower()).strip("-")[:64]
    return cleaned or "main"


def _parse_agent_key(key: str) -> tuple[str, str] | None:
    parts = [p for p in key.strip().lower().split(":") if p]
    if len(parts) < 3 or parts[0] != "agent":
        return None
    return parts[1], ":".join(parts[2:])


def main_session_key(config: SessionsConfig, agent_id: str | None = None) -> str:
    if config.scope == "global" and agent_id is None:
        return "global"
    return f"agent:{normalize_agent_id(agent_id or config.default_agent)}:{config.main_key}"


def canonical_key(raw: str, config: SessionsConfig) -> str:
    """The canonical store key of ``raw`` (which must not be empty)."""
    key = raw.strip()
    lower = key.lower()
    if lower in ("global", "unknown"):
        return lower
    parsed = _parse_agent_key(key)
    if parsed is not None:
        agent = normalize_agent_id(parsed[0])
        aliases = {
            "main",
            config.main_key,
            f"agent:{agent}:main",
            f"agent:{agent}:{config.main_key}",
        }
        if lower in aliases:
            return "global" if config.scope == "global" else f"agent:{agent}:{config.main_key}"
        return lower
    if lower in ("main", config.main_key):
        return main_session_key(config)
    if lower.startswith("agent:"):
        return lower
    return f"agent:{normalize_agent_id(config.default_agent)}:{lower}"


def agent_of(canonical: str, config: SessionsConfig) -> str:
    parsed = _parse_agent_key(canonical)
    if canonical in ("global", "unknown") or parsed is None:
        return normalize_agent_id(config.default_agent)
    return normalize_agent_id(parsed[0])


def store_keys(
    raw: str, canonical: str, agent_id: str, config: SessionsConfig, existing: Iterable[str]
) -> list[str]:
    """Every key ``raw``'s session may be stored under, canonical first (see module doc)."""
    key = raw.strip()
    keys = dict.fromkeys([canonical, key])
    targets = [canonical] + ([key] if key != canonical else [])
    if canonical == f"agent:{agent_id}:{config.main_key}":
        targets.append(f"agent:{agent_id}:main")
    wanted = [t.lower() for t in targets]
    existing = list(existing)
    for target in wanted:
        for name in existing:
            if name.lower() == target:
                keys[name] = None
    return list(keys)


def is_subagent_key(key: str) -> bool:
    lower = key.strip().lower()
    if lower.startswith("subagent:"):
        return True
    parsed = _parse_agent_key(lower)
    return parsed is not None and parsed[1].startswith("subagent:")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a key's session lives: its agent, canonical key and every alias in the store."""

    raw_key: str
    canonical: str
    agent_id: str
    store_keys: tuple[str, ...]


def check_key(raw: object) -> str:
    """The trimmed key, or ``UsageError`` (INVALID_REQUEST) for an empty or malformed one."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise UsageError("INVALID_REQUEST: key required")
    key = raw.strip()
    if len(key) > MAX_KEY_LENGTH or any(_control(c) for c in key):
        raise UsageError(
            f"INVALID_REQUEST: key {key[:40]!r}... is not a session key "
            f"(at most {MAX_KEY_LENGTH} printable characters)"
        )
    return key


def _control(char: str) -> bool:
    """Control, format (bidi overrides), line and paragraph separator characters."""
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def resolve_target(raw: object, config: SessionsConfig, existing: Iterable[str] = ()) -> Target:
    """Validate ``raw`` and resolve its target; ``UsageError`` for bad keys or unknown agents."""
    key = check_key(raw)
    canonical = canonical_key(key, config)
    parsed = _parse_agent_key(canonical)
    if canonical.startswith("agent:") and parsed is None:
        raise UsageError(f"INVALID_REQUEST: key {key!r} is incomplete (expected agent:<id>:<rest>)")
    agent = agent_of(canonical, config)
    if agent not in config.agents:
        raise UsageError(
            f"INVALID_REQUEST: unknown agent {agent!r} in key {key!r} "
            f"(agents: {', '.join(config.agents)})"
        )
    return Target(key, canonical, agent, tuple(store_keys(key, canonical, agent, config, existing)))
