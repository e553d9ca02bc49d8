"""The session entry a reset writes (OpenClaw Version A), and the new transcript's file name.

A reset builds a *fresh* entry: the fields in ``COPIED_FIELDS`` come over from the current
entry, a few are set fresh, model and provider are derived again, and everything else is
dropped (unknown and plugin fields included).
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = (
    "COPIED_FIELDS",
    "DROPPED_EXAMPLES",
    "SESSION_ID",
    "reset_entry",
    "rewrite_session_file",
    "valid_session_id",
)

#: Session ids are validated before any path is built from them.
SESSION_ID: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}", re.IGNORECASE | re.ASCII)

#: Fields a reset copies from the current entry, in the order they are written.
COPIED_FIELDS: Final = (
    "thinkingLevel",
    "fastMode",
    "verboseLevel",
    "reasoningLevel",
    "elevatedLevel",
    "ttsAuto",
    "responseUsage",
    "sendPolicy",
    "execHost",
    "execSecurity",
    "execAsk",
    "execNode",
    "providerOverride",
    "modelOverride",
    "authProfileOverride",
    "authProfileOverrideSource",
    "authProfileOverrideCompactionCount",
    "groupActivation",
    "groupActivationNeedsSystemIntro",
    "chatType",
    "queueMode",
    "queueDebounceMs",
    "queueCap",
    "queueDrop",
    "spawnedBy",
    "spawnedWorkspaceDir",
    "parentSessionKey",
    "forkedFromParent",
    "spawnDepth",
    "subagentRole",
    "subagentControlScope",
    "label",
    "displayName",
    "channel",
    "groupId",
    "subject",
    "groupChannel",
    "space",
    "deliveryContext",
    "lastChannel",
    "lastTo",
    "lastAccountId",
    "lastThreadId",
    "cliSessionBindings",
    "cliSessionIds",
    "claudeCliSessionId",
    "skillsSnapshot",
    "acp",
)

#: Fields a reset is known to drop (documentation and tests; any unlisted field is dropped too).
DROPPED_EXAMPLES: Final = (
    "compactionCount",
    "memoryFlushAt",
    "memoryFlushCompactionCount",
    "cacheRead",
    "cacheWrite",
    "fallbackNoticeSelectedModel",
    "lastHeartbeatText",
    "lastHeartbeatSentAt",
    "abortCutoffMessageSid",
    "abortCutoffTimestamp",
    "systemPromptReport",
    "contextTokens",
)


def valid_session_id(value: object) -> bool:
    return isinstance(value, str) and SESSION_ID.fullmatch(value) is not None


def reset_entry(
    current: dict[str, Any] | None,
    *,
    session_id: str,
    session_file: str,
    updated_at: int,
    default_model: tuple[str, str] = ("anthropic", "claude-opus-4-6"),
) -> dict[str, Any]:
    """The entry that replaces ``current`` (None: the key had no entry) on reset."""
    current = current or {}
    entry: dict[str, Any] = {
        "sessionId": session_id,
        "sessionFile": session_file,
        "updatedAt": updated_at,
        "systemSent": False,
        "abortedLastRun": False,
    }
    for name in COPIED_FIELDS:
        if current.get(name) is not None:
            entry[name] = current[name]
    provider, model = _model_of(current, default_model)
    entry["model"], entry["modelProvider"] = model, provider
    if current.get("origin") is not None:
        entry["origin"] = current["origin"]
    entry.update(inputTokens=0, outputTokens=0, totalTokens=0, totalTokensFresh=True)
    return entry


def _model_of(current: dict[str, Any], default: tuple[str, str]) -> tuple[str, str]:
    """The override when set, else the agent's default (runtime model state is never kept).

    An override written ``provider/model`` names its provider itself (``providerOverride``
    is then ignored, as OpenClaw's model-ref parsing does).
    """
    override = current.get("modelOverride")
    if not isinstance(override, str) or not override.strip():
        return default
    override = override.strip()
    if "/" in override:
        provider, _, model = override.partition("/")
        if provider and model:
            return provider.lower(), model
    named = current.get("providerOverride")
    return (named.lower() if isinstance(named, str) and named else default[0]), override


#: A name a gateway generated (a UUID): rotated even when it is not the entry's current id.
_GENERATED = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)
_TOPIC = re.compile(r"^(?P<id>.+?)-topic-(?P<topic>.+)$")
_STAMPED = re.compile(
    r"^(?P<stamp>\d{4}-\d{2}-\d{2}T[\w-]+(?:Z|[+-]\d{2}(?:-\d{2})?)?)_(?P<id>.+)$"
)


def rewrite_session_file(old_file: str | None, old_id: str | None, new_id: str) -> str:
    """The new transcript's file name (a basename) from the old one (spec §3.4).

    ``<old>.jsonl`` -> ``<new>.jsonl``; ``<old>-topic-<t>.jsonl`` -> ``<new>-topic-<t>.jsonl``;
    ``<ISO stamp>_<old>.jsonl`` -> ``<ISO stamp>_<new>.jsonl``; any other name is kept (the
    old file is archived first, then the new header takes its place). ``<old>`` is the
    entry's session id or, fixing #77770, any generated (UUID) id in the name: a stale
    generated name rotates too. No old name: ``<new>.jsonl``.
    """
    if not old_file:
        return f"{new_id}.jsonl"
    name = old_file.replace("\\", "/").rsplit("/", 1)[-1]
    if not name.endswith(".jsonl"):
        return name
    stem = name[: -len(".jsonl")]

    def rotates(embedded: str) -> bool:
        return embedded == old_id or _GENERATED.match(embedded) is not None

    if rotates(stem):
        return f"{new_id}.jsonl"
    topic = _TOPIC.match(stem)
    if topic and rotates(topic["id"]):
        return f"{new_id}-topic-{topic['topic']}.jsonl"
    stamped = _STAMPED.match(stem)
    if stamped and rotates(stamped["id"]):
        return f"{stamped['stamp']}_{new_id}.jsonl"
    return name
