"""What a reset writes: the fresh entry (§3.2), transcript names, archives and headers (§3.4)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.errors import UsageError
from workflows.sessions.entry import (
    COPIED_FIELDS,
    DROPPED_EXAMPLES,
    reset_entry,
    rewrite_session_file,
    valid_session_id,
)
from workflows.sessions.paths import (
    check_no_symlinks,
    resolve_session_file,
    transcript_candidates,
)
from workflows.sessions.transcripts import (
    archive_path,
    iso_utc,
    move_no_overwrite,
    read_header_id,
    write_header,
)

OLD_ID = "3f1c2b9e-5d4a-4c1e-9a7b-1e2d3c4b5a69"
NEW_ID = "9b8a7c6d-1e2f-4a3b-8c5d-6e7f8a9b0c1d"
STALE_ID = "00000000-1111-4222-8333-444444444444"
NOW_MS = 1773806538203  # 2026-03-18T04:02:18.203Z
DEFAULT_MODEL = ("openai", "gpt-5.4")

#: Spec §3.2, Version A "Copied" list, written out so a field dropped from COPIED_FIELDS fails.
SPEC_COPIED = (
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

#: Dropped by Version A: the documented examples, Version-B-only fields, unknown/plugin fields.
EXTRA_DROPPED = (
    "fallbackNoticeActiveModel",
    "fallbackNoticeReason",
    "compactionCheckpoints",
    "traceLevel",
    "spawnedCwd",
    "myPluginField",
    "x-vendor",
    "lastInteractionAt",
)

FRESH = {
    "sessionId": NEW_ID,
    "sessionFile": f"{NEW_ID}.jsonl",
    "updatedAt": NOW_MS,
    "systemSent": False,
    "abortedLastRun": False,
    "inputTokens": 0,
    "outputTokens": 0,
    "totalTokens": 0,
    "totalTokensFresh": True,
}

_SPECIAL_VALUES: dict[str, Any] = {
    "fastMode": True,
    "ttsAuto": "always",
    "execHost": "sandbox",
    "providerOverride": "anthropic",
    "modelOverride": "claude-sonnet-4-6",
    "authProfileOverrideCompactionCount": 3,
    "groupActivationNeedsSystemIntro": True,
    "queueDebounceMs": 1500,
    "queueCap": 20,
    "forkedFromParent": True,
    "spawnDepth": 2,
    "deliveryContext": {"channel": "discord", "to": "channel:1", "accountId": "default"},
    "lastThreadId": 17,
    "cliSessionBindings": {"claude-cli": {"sessionId": "c1", "cwd": "/w"}},
    "cliSessionIds": {"claude-cli": "c1", "codex": "x2"},
    "skillsSnapshot": {"prompt": "skills…", "skills": [{"name": "weather"}], "version": 4},
    "acp": {"backend": "acpx", "agent": "codex", "identity": {"id": "a1"}, "state": "idle"},
}


def _current() -> dict[str, Any]:
    """A used entry with every field a reset meets: copied, dropped, stale runtime ones."""
    entry: dict[str, Any] = {
        "sessionId": OLD_ID,
        "sessionFile": f"/state/agents/main/sessions/{OLD_ID}.jsonl",
        "updatedAt": NOW_MS - 60_000,
        "systemSent": True,
        "abortedLastRun": True,
        "inputTokens": 1234,
        "outputTokens": 567,
        "totalTokens": 1801,
        "totalTokensFresh": False,
        "model": "stale-runtime-model",
        "modelProvider": "stale-provider",
        "origin": {"provider": "discord", "surface": "discord", "chatType": "group"},
    }
    for name in SPEC_COPIED:
        entry[name] = _SPECIAL_VALUES.get(name, f"value of {name}")
    for name in (*DROPPED_EXAMPLES, *EXTRA_DROPPED):
        entry[name] = {"dropped": name}
    return entry


def _reset(current: dict[str, Any] | None, **kw: Any) -> dict[str, Any]:
    return reset_entry(
        current,
        session_id=NEW_ID,
        session_file=f"{NEW_ID}.jsonl",
        updated_at=NOW_MS,
        default_model=kw.pop("default_model", DEFAULT_MODEL),
    )


# --- reset_entry: the field preservation table --------------------------------------------


def test_copied_fields_are_the_spec_list() -> None:
    assert set(COPIED_FIELDS) == set(SPEC_COPIED)
    assert len(COPIED_FIELDS) == len(set(COPIED_FIELDS))
    assert not set(COPIED_FIELDS) & set(DROPPED_EXAMPLES)


@pytest.mark.parametrize("name", SPEC_COPIED)
def test_copied_field_keeps_its_value(name: str) -> None:
    current = _current()
    entry = _reset(current)
    assert name in entry, f"{name} must survive a reset"
    assert entry[name] == current[name]


@pytest.mark.parametrize("name", SPEC_COPIED)
@pytest.mark.parametrize("falsy", [False, 0, ""])
def test_copied_field_keeps_a_falsy_value(name: str, falsy: object) -> None:
    entry = _reset({name: falsy})
    assert name in entry and entry[name] == falsy and type(entry[name]) is type(falsy)


@pytest.mark.parametrize("name", sorted({*DROPPED_EXAMPLES, *EXTRA_DROPPED, "contextTokens"}))
def test_dropped_field_does_not_survive(name: str) -> None:
    assert name not in _reset(_current()), f"{name} must be dropped by a reset"


@pytest.mark.parametrize(("name", "value"), list(FRESH.items()))
@pytest.mark.parametrize("has_entry", [True, False])
def test_fresh_field(name: str, value: object, has_entry: bool) -> None:
    entry = _reset(_current() if has_entry else None)
    assert entry[name] == value and type(entry[name]) is type(value)


def test_reset_entry_has_exactly_the_table_fields() -> None:
    entry = _reset(_current())
    expected = {*FRESH, *SPEC_COPIED, "origin", "model", "modelProvider"}
    assert set(entry) == expected, (
        f"unexpected {sorted(set(entry) - expected)}, missing {sorted(expected - set(entry))}"
    )


def test_reset_of_a_missing_entry_is_bare() -> None:
    assert _reset(None) == {
        **FRESH,
        "model": DEFAULT_MODEL[1],
        "modelProvider": DEFAULT_MODEL[0],
    }
    assert _reset({}) == _reset(None)


def test_origin_is_copied() -> None:
    current = _current()
    assert _reset(current)["origin"] == current["origin"]
    del current["origin"]
    assert "origin" not in _reset(current)


def test_reset_entry_does_not_mutate_the_current_entry() -> None:
    current = _current()
    before = orjson.dumps(current)
    _reset(current)
    assert orjson.dumps(current) == before


def test_reset_entry_is_json_serializable() -> None:
    entry = _reset(_current())
    assert orjson.loads(orjson.dumps(entry)) == entry


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, DEFAULT_MODEL),
        ({"model": "gpt-4o", "modelProvider": "openai-codex"}, DEFAULT_MODEL),
        ({"providerOverride": "google"}, DEFAULT_MODEL),
        ({"modelOverride": ""}, DEFAULT_MODEL),
        ({"modelOverride": "   ", "providerOverride": "google"}, DEFAULT_MODEL),
        ({"modelOverride": None}, DEFAULT_MODEL),
        ({"modelOverride": "claude-sonnet-4-6", "providerOverride": "anthropic"},
         ("anthropic", "claude-sonnet-4-6")),
        ({"modelOverride": "gemini-3-pro", "providerOverride": "Google"},
         ("google", "gemini-3-pro")),
        ({"modelOverride": " gemini-3-pro ", "providerOverride": "google"},
         ("google", "gemini-3-pro")),
        ({"modelOverride": "gpt-5-mini"}, ("openai", "gpt-5-mini")),
        ({"modelOverride": "openai/gpt-5", "providerOverride": "anthropic"}, ("openai", "gpt-5")),
        ({"modelOverride": "OpenAI/gpt-5"}, ("openai", "gpt-5")),
        ({"modelOverride": "openrouter/anthropic/claude-3.7"},
         ("openrouter", "anthropic/claude-3.7")),
        ({"modelOverride": "gpt-5", "providerOverride": "openai",
          "model": "stale", "modelProvider": "stale"}, ("openai", "gpt-5")),
    ],
)  # fmt: skip
def test_model_is_derived_again(fields: dict[str, Any], expected: tuple[str, str]) -> None:
    entry = _reset(fields)
    assert (entry["modelProvider"], entry["model"]) == expected
    assert "stale" not in (entry["model"], entry["modelProvider"])


def test_model_default_is_the_agents_default() -> None:
    entry = _reset(_current() | {"modelOverride": None}, default_model=("zai", "glm-5"))
    assert (entry["modelProvider"], entry["model"]) == ("zai", "glm-5")


# --- rewrite_session_file -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("old_file", "old_id", "expected"),
    [
        (None, OLD_ID, f"{NEW_ID}.jsonl"),
        ("", OLD_ID, f"{NEW_ID}.jsonl"),
        (None, None, f"{NEW_ID}.jsonl"),
        (f"{OLD_ID}.jsonl", OLD_ID, f"{NEW_ID}.jsonl"),
        ("abc.jsonl", "abc", f"{NEW_ID}.jsonl"),
        (f"{OLD_ID}-topic-42.jsonl", OLD_ID, f"{NEW_ID}-topic-42.jsonl"),
        (f"{OLD_ID}-topic-general-chat.jsonl", OLD_ID, f"{NEW_ID}-topic-general-chat.jsonl"),
        (f"2026-03-18T04-02-18Z_{OLD_ID}.jsonl", OLD_ID, f"2026-03-18T04-02-18Z_{NEW_ID}.jsonl"),
        (
            f"2026-03-18T04-02-18-203Z_{OLD_ID}.jsonl",
            OLD_ID,
            f"2026-03-18T04-02-18-203Z_{NEW_ID}.jsonl",
        ),
        # a generated (UUID) name that is not the current id rotates too (#77770)
        (f"{STALE_ID}.jsonl", OLD_ID, f"{NEW_ID}.jsonl"),
        (f"{STALE_ID.upper()}.jsonl", OLD_ID, f"{NEW_ID}.jsonl"),
        (f"{STALE_ID}-topic-7.jsonl", OLD_ID, f"{NEW_ID}-topic-7.jsonl"),
        (f"2026-01-02T03-04-05Z_{STALE_ID}.jsonl", None, f"2026-01-02T03-04-05Z_{NEW_ID}.jsonl"),
        # custom names are kept
        ("notes.jsonl", OLD_ID, "notes.jsonl"),
        ("my-chat.jsonl", OLD_ID, "my-chat.jsonl"),
        ("abc.jsonl", "abd", "abc.jsonl"),
        ("abc-topic-1.jsonl", "abd", "abc-topic-1.jsonl"),
        ("2026-03-18T04-02-18Z_notes.jsonl", OLD_ID, "2026-03-18T04-02-18Z_notes.jsonl"),
        ("2026-03-18_notes.jsonl", "notes", "2026-03-18_notes.jsonl"),
        (f"{OLD_ID}.txt", OLD_ID, f"{OLD_ID}.txt"),
        (f"{OLD_ID}.jsonl.bak", OLD_ID, f"{OLD_ID}.jsonl.bak"),
        # directories are stripped
        (f"/state/agents/main/sessions/{OLD_ID}.jsonl", OLD_ID, f"{NEW_ID}.jsonl"),
        (f"sessions/{OLD_ID}-topic-9.jsonl", OLD_ID, f"{NEW_ID}-topic-9.jsonl"),
        (f"C:\\Users\\me\\.openclaw\\{OLD_ID}.jsonl", OLD_ID, f"{NEW_ID}.jsonl"),
        ("/state/agents/main/sessions/notes.jsonl", OLD_ID, "notes.jsonl"),
        ("C:\\notes\\my-chat.jsonl", OLD_ID, "my-chat.jsonl"),
    ],
)
def test_rewrite_session_file(old_file: str | None, old_id: str | None, expected: str) -> None:
    got = rewrite_session_file(old_file, old_id, NEW_ID)
    assert got == expected
    assert "/" not in got and "\\" not in got, "a basename"


# --- valid_session_id ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        OLD_ID,
        OLD_ID.upper(),
        "a",
        "0",
        "abc.def_ghi-1",
        "a..b",
        "a" * 128,
        "Z" + "9" * 127,
    ],
)
def test_valid_session_id_accepts(value: str) -> None:
    assert valid_session_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 129,
        "..",
        ".hidden",
        "-dash",
        "_under",
        "a/b",
        "a\\b",
        "a b",
        "a:b",
        "a\x00b",
        "abc\n",
        "abc\r\n",
        "\nabc",
        "\uff41bc",  # FULLWIDTH LATIN SMALL LETTER A
        "\u212abc",  # KELVIN SIGN, case-folds to k
        "\u017fession",  # LATIN SMALL LETTER LONG S, case-folds to s
        "\u0130d",  # LATIN CAPITAL LETTER I WITH DOT ABOVE
        "\u0131d",  # LATIN SMALL LETTER DOTLESS I
        "abc\u0301",
        None,
        42,
        b"abc",
    ],
)
def test_valid_session_id_refuses(value: object) -> None:
    assert not valid_session_id(value), f"{value!r} must not pass as a session id"


# --- iso_utc / archive_path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1000, "1970-01-01T00:00:01.000Z"),
        (NOW_MS, "2026-03-18T04:02:18.203Z"),
        (1773806538000, "2026-03-18T04:02:18.000Z"),
        (1773806538007, "2026-03-18T04:02:18.007Z"),
        (951782400000, "2000-02-29T00:00:00.000Z"),
        (253402300799999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_iso_utc_is_javascript_to_iso_string(ms: int, expected: str) -> None:
    assert iso_utc(ms) == expected


@pytest.mark.parametrize(
    ("path", "reason", "ms", "expected"),
    [
        ("/d/abc.jsonl", "reset", NOW_MS, "/d/abc.jsonl.reset.2026-03-18T04-02-18.203Z"),
        ("/d/abc.jsonl", "deleted", 0, "/d/abc.jsonl.deleted.1970-01-01T00-00-00.000Z"),
        ("/d/x-topic-1.jsonl", "bak", 1000, "/d/x-topic-1.jsonl.bak.1970-01-01T00-00-01.000Z"),
        ("rel/notes.jsonl", "reset", NOW_MS, "rel/notes.jsonl.reset.2026-03-18T04-02-18.203Z"),
    ],
)
def test_archive_path(path: str, reason: str, ms: int, expected: str) -> None:
    assert archive_path(Path(path), reason, ms) == Path(expected)
    assert ":" not in archive_path(Path(path), reason, ms).name


# --- move_no_overwrite --------------------------------------------------------------------


def _header(session_id: str) -> bytes:
    return orjson.dumps({"type": "session", "version": 3, "id": session_id}) + b"\n"


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "abc.jsonl", tmp_path / "abc.jsonl.reset.2026-03-18T04-02-18.203Z"


def test_move_moves(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    src.write_bytes(_header(OLD_ID) + b'{"type":"message"}\n')
    assert move_no_overwrite(src, dst, new_session_id=NEW_ID) == "moved"
    assert not src.exists()
    assert dst.read_bytes() == _header(OLD_ID) + b'{"type":"message"}\n'


def test_move_again_is_already_moved(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    src.write_bytes(b"old")
    assert move_no_overwrite(src, dst) == "moved"
    assert move_no_overwrite(src, dst) == "already_moved"
    assert dst.read_bytes() == b"old" and not src.exists()


def test_move_of_nothing_is_missing(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    assert move_no_overwrite(src, dst) == "missing"
    assert not src.exists() and not dst.exists()


def test_move_never_overwrites(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    src.write_bytes(_header(OLD_ID) + b"source")
    dst.write_bytes(b"an earlier archive, not to be lost")
    assert move_no_overwrite(src, dst, new_session_id=NEW_ID) == "kept_both"
    assert dst.read_bytes() == b"an earlier archive, not to be lost"
    assert src.read_bytes() == _header(OLD_ID) + b"source"


@pytest.mark.parametrize("dst_exists", [False, True])
def test_move_keeps_the_new_sessions_transcript(pair: tuple[Path, Path], dst_exists: bool) -> None:
    src, dst = pair
    src.write_bytes(_header(NEW_ID))
    if dst_exists:
        dst.write_bytes(_header(OLD_ID))
    assert move_no_overwrite(src, dst, new_session_id=NEW_ID) == "kept_new"
    assert src.read_bytes() == _header(NEW_ID)
    assert dst.exists() is dst_exists


def test_move_without_new_id_moves_any_header(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    src.write_bytes(_header(NEW_ID))
    assert move_no_overwrite(src, dst) == "moved"


def test_move_finishes_a_crashed_link_then_unlink(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    src.write_bytes(_header(OLD_ID) + b"body")
    os.link(src, dst)  # the crash came between link and unlink
    assert move_no_overwrite(src, dst, new_session_id=NEW_ID) == "moved"
    assert not src.exists()
    assert dst.read_bytes() == _header(OLD_ID) + b"body"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (_header(OLD_ID) + b"more", OLD_ID),
        (b'{"type":"session","id":42}\n', None),
        (b'{"type":"message","id":"x"}\n', None),
        (b"not json\n", None),
        (b"", None),
        (b"[1,2]\n", None),
    ],
)
def test_read_header_id(tmp_path: Path, content: bytes, expected: str | None) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(content)
    assert read_header_id(path) == expected
    assert read_header_id(tmp_path / "missing.jsonl") is None


# --- write_header -------------------------------------------------------------------------


def test_write_header_writes_one_line(tmp_path: Path) -> None:
    path = tmp_path / f"{NEW_ID}.jsonl"
    assert write_header(path, NEW_ID, NOW_MS, "/home/me/work") is True
    data = path.read_bytes()
    assert data == (
        b'{"type":"session","version":3,"id":"' + NEW_ID.encode() + b'",'
        b'"timestamp":"2026-03-18T04:02:18.203Z","cwd":"/home/me/work"}\n'
    )
    assert data.count(b"\n") == 1
    assert list(orjson.loads(data)) == ["type", "version", "id", "timestamp", "cwd"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "no temp file left"


def test_write_header_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        assert write_header(tmp_path / "a.jsonl", "a", NOW_MS, "/")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.jsonl").stat().st_mode) == 0o600


@pytest.mark.parametrize("existing", [b"", _header(OLD_ID) + b'{"type":"message"}\n', b"junk"])
def test_write_header_never_replaces_a_file(tmp_path: Path, existing: bytes) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_bytes(existing)
    before = path.stat()
    assert write_header(path, NEW_ID, NOW_MS, "/w") is False
    assert path.read_bytes() == existing
    assert path.stat().st_ino == before.st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl"], "no temp file left"


def test_write_header_does_not_follow_a_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.symlink_to(tmp_path / "elsewhere.jsonl")
    assert write_header(path, NEW_ID, NOW_MS, "/w") is False
    assert not (tmp_path / "elsewhere.jsonl").exists()


def test_write_header_escapes_the_cwd(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    cwd = '/home/"me"/dir\nwith newline/ünï'
    assert write_header(path, NEW_ID, NOW_MS, cwd)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 1 and orjson.loads(lines[0])["cwd"] == cwd


# --- paths --------------------------------------------------------------------------------


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "agents" / "main" / "sessions"
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize("name", [f"{OLD_ID}.jsonl", "notes.jsonl", "./notes.jsonl", "a b.jsonl"])
def test_resolve_session_file_relative(sessions: Path, name: str) -> None:
    assert resolve_session_file(sessions, name) == sessions / os.path.normpath(name)


def test_resolve_session_file_absolute_inside(sessions: Path) -> None:
    assert resolve_session_file(sessions, str(sessions / "x.jsonl")) == sessions / "x.jsonl"
    assert resolve_session_file(sessions, str(sessions / "sub" / ".." / "x.jsonl")) == (
        sessions / "x.jsonl"
    )


@pytest.mark.parametrize(
    "name",
    [
        "../x.jsonl",
        "../../../../etc/passwd",
        "/etc/passwd",
        "sub/x.jsonl",
        "./sub/x.jsonl",
        "x.jsonl\x00.txt",
        "",
        ".",
        "..",
        None,
        42,
        ["x.jsonl"],
    ],
)
def test_resolve_session_file_refuses(sessions: Path, name: object) -> None:
    assert resolve_session_file(sessions, name) is None


def test_resolve_session_file_refuses_an_absolute_path_elsewhere(
    sessions: Path, tmp_path: Path
) -> None:
    assert resolve_session_file(sessions, str(tmp_path / "x.jsonl")) is None
    assert resolve_session_file(sessions, str(sessions.parent / "x.jsonl")) is None
    assert resolve_session_file(sessions, str(sessions / "sub" / "x.jsonl")) is None


def test_resolve_session_file_refuses_a_symlink(sessions: Path, tmp_path: Path) -> None:
    target = tmp_path / "secret.txt"
    target.write_text("secret")
    (sessions / "link.jsonl").symlink_to(target)
    (sessions / "dangling.jsonl").symlink_to(tmp_path / "nowhere")
    assert resolve_session_file(sessions, "link.jsonl") is None
    assert resolve_session_file(sessions, str(sessions / "link.jsonl")) is None
    assert resolve_session_file(sessions, "dangling.jsonl") is None


def test_transcript_candidates_order_and_dedupe(sessions: Path, tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"
    assert transcript_candidates(sessions, legacy, OLD_ID, "notes.jsonl") == [
        sessions / "notes.jsonl",
        sessions / f"{OLD_ID}.jsonl",
        legacy / f"{OLD_ID}.jsonl",
    ]
    assert transcript_candidates(sessions, legacy, OLD_ID, f"{OLD_ID}.jsonl") == [
        sessions / f"{OLD_ID}.jsonl",
        legacy / f"{OLD_ID}.jsonl",
    ]
    assert transcript_candidates(sessions, None, OLD_ID, str(sessions / f"{OLD_ID}.jsonl")) == [
        sessions / f"{OLD_ID}.jsonl"
    ]
    assert transcript_candidates(sessions, sessions, OLD_ID, None) == [sessions / f"{OLD_ID}.jsonl"]


@pytest.mark.parametrize("bad_id", ["../x", "", None, "a/b", "abc\n"])
def test_transcript_candidates_skip_an_invalid_id(
    sessions: Path, tmp_path: Path, bad_id: object
) -> None:
    assert transcript_candidates(sessions, tmp_path, bad_id, "notes.jsonl") == [
        sessions / "notes.jsonl"
    ]
    assert transcript_candidates(sessions, tmp_path, bad_id, "../x.jsonl") == []


def test_check_no_symlinks_accepts_real_directories(sessions: Path) -> None:
    check_no_symlinks(sessions.parents[2], sessions)


@pytest.mark.parametrize("linked", ["agents", "agents/main", "agents/main/sessions"])
def test_check_no_symlinks_refuses_a_symlinked_directory(tmp_path: Path, linked: str) -> None:
    state = tmp_path / "state"
    real = tmp_path / "real"
    (real / "agents" / "main" / "sessions").mkdir(parents=True)
    state.mkdir()
    parts = Path(linked).parts
    if len(parts) > 1:
        (state / Path(*parts[:-1])).mkdir(parents=True)
    (state / linked).symlink_to(real / linked, target_is_directory=True)
    sessions = state / "agents" / "main" / "sessions"
    assert sessions.is_dir()
    with pytest.raises(UsageError, match="symlink"):
        check_no_symlinks(state, sessions)


def test_check_no_symlinks_refuses_a_directory_outside(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="outside"):
        check_no_symlinks(tmp_path / "state", tmp_path / "other" / "sessions")
