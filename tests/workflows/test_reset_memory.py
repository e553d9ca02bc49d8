"""session_reset on the memory host: the outcome table, the data model, hooks, unbind, races."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator import Engine, Outcome, StepFinished
from orchestrator.testing import FakeClock
from tests.workflows.memory_rig import (
    CANONICAL,
    KEY,
    SESSIONS,
    SHORT,
    STILL_ACTIVE,
    fail_reply,
    full_setup,
    make_rig,
    seed,
    transcript,
)
from workflows.session_reset import make_session_reset
from workflows.sessions.service import SessionService

pytestmark = pytest.mark.anyio

STEPS = (
    "hook_fired",
    "runtime_cleanup",
    "acp_cancel",
    "acp_close",
    "store_mutation",
    "archive",
    "unbind",
)


# -- helpers ------------------------------------------------------------------------------


def stamp(at_ms: int) -> str:
    """``2026-03-18T04-02-18.203Z``: ISO-8601 UTC with ':' -> '-' (written independently)."""
    moment = datetime.fromtimestamp(at_ms // 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H-%M-%S") + f".{at_ms % 1000:03d}Z"


def header_of(data: bytes) -> dict[str, Any]:
    lines = data.splitlines()
    assert len(lines) == 1 and data.endswith(b"\n"), data
    value = orjson.loads(lines[0])
    assert isinstance(value, dict)
    return value


# -- the outcome table, through the engine's force injection --------------------------------


@dataclass(frozen=True)
class Forced:
    state: str
    outcome: Outcome
    #: None: the run goes on and succeeds; else the UNAVAILABLE message it fails with.
    fails_with: str | None = None
    #: Attempts of ``state`` the table allows (retry budget) before moving on.
    attempts: int = 1


FORCED = [
    Forced("hook_fired", "ok"),
    Forced("hook_fired", "timeout"),
    Forced("hook_fired", "error"),
    Forced("runtime_cleanup", "ok"),
    Forced("runtime_cleanup", "timeout", STILL_ACTIVE),
    Forced("runtime_cleanup", "error", f"Session {KEY} cleanup failed: outcome forced to error"),
    Forced("acp_cancel", "ok"),
    Forced("acp_cancel", "timeout", STILL_ACTIVE),
    Forced("acp_cancel", "error"),
    Forced("acp_close", "ok"),
    Forced("acp_close", "timeout", STILL_ACTIVE),
    Forced("acp_close", "error"),
    Forced("store_mutation", "timeout", f"Session {KEY} store is busy; try again."),
    Forced("store_mutation", "error", "outcome forced to error", attempts=2),
    Forced("archive", "ok"),
    Forced("archive", "timeout", attempts=3),
    Forced("archive", "error", attempts=3),
    Forced("unbind", "ok"),
    Forced("unbind", "timeout", attempts=3),
    Forced("unbind", "error", attempts=3),
]


@pytest.mark.parametrize("case", FORCED, ids=lambda c: f"{c.state}={c.outcome}")
async def test_forced_outcome_leads_where_the_table_says(case: Forced) -> None:
    rig = make_rig()
    old_id, _ = full_setup(rig)
    before = rig.store_bytes()
    reply = await rig.service.reset(KEY, force={case.state: case.outcome})
    (run_id,) = rig.run_ids()
    assert reply["run_id"] == run_id
    upto = STEPS.index(case.state)
    expected = [(s, "ok") for s in STEPS[:upto]] + [(case.state, case.outcome)] * case.attempts
    if case.fails_with is None:
        expected += [(s, "ok") for s in STEPS[upto + 1 :]]
    assert rig.path(run_id) == expected
    finished = [r for r in rig.records(run_id) if isinstance(r, StepFinished)]
    assert {r.step for r in finished if r.forced} == {case.state}
    history = rig.journal.history(run_id)
    assert history is not None and history.started.forced == {case.state: case.outcome}
    if case.fails_with is None:
        assert reply["ok"] is True and reply["key"] == CANONICAL
        assert rig.end(run_id).status == "succeeded"
        assert rig.host.store.entries()[CANONICAL]["sessionId"] == reply["entry"]["sessionId"]
        assert reply["entry"]["sessionId"] != old_id
    else:
        fail_reply(reply, case.fails_with)
        end = rig.end(run_id)
        assert (end.status, end.step, end.code) == ("failed", case.state, "UNAVAILABLE")
        assert rig.store_bytes() == before  # every failing state comes before the write


async def test_forced_ok_commit_still_gets_a_reply() -> None:
    """Forcing the commit ``ok`` (it does not run) must not crash the reply layer."""
    rig = make_rig()
    full_setup(rig)
    reply = await rig.service.reset(KEY, force={"store_mutation": "ok"})
    (run_id,) = rig.run_ids()
    assert rig.end(run_id).status == "succeeded"
    assert [s for s, _ in rig.path(run_id)][-1] == "unbind"
    assert reply["ok"] is True
    assert (reply["key"], reply["run_id"]) == (CANONICAL, run_id)


# -- the outcome table, through the memory host's controls ---------------------------------


@dataclass(frozen=True)
class Control:
    op: str
    mode: str
    step: str
    #: The outcomes of ``step``'s attempts, in order.
    outcomes: tuple[str, ...]
    fails_with: str | None = None
    timeouts: dict[str, float] = field(default_factory=dict)


CONTROLS = [
    Control("hooks.command", "fail", "hook_fired", ("error",)),
    Control("hooks.command", "hang", "hook_fired", ("timeout",), timeouts={"hook_timeout": SHORT}),
    Control(
        "runtime.clear_queues",
        "fail",
        "runtime_cleanup",
        ("error",),
        f"Session {KEY} cleanup failed: runtime.clear_queues failed (memory host)",
    ),
    Control(
        "runtime.abort_run",
        "fail",
        "runtime_cleanup",
        ("error",),
        f"Session {KEY} cleanup failed: runtime.abort_run failed (memory host)",
    ),
    Control(
        "runtime.wait_run_end",
        "hang",
        "runtime_cleanup",
        ("timeout",),
        STILL_ACTIVE,
        {"cleanup_timeout": SHORT},
    ),
    Control("acp.cancel", "fail", "acp_cancel", ("error",)),
    Control("acp.cancel", "hang", "acp_cancel", ("timeout",), STILL_ACTIVE, {"acp_timeout": SHORT}),
    Control("acp.close", "fail", "acp_close", ("error",)),
    Control("acp.close", "hang", "acp_close", ("timeout",), STILL_ACTIVE, {"acp_timeout": SHORT}),
    Control(
        "store.update",
        "fail",
        "store_mutation",
        ("error", "error"),  # tried twice: an error after the write would leave it done
        "store.update failed (memory host)",
    ),
    Control(
        "store.update",
        "hang",
        "store_mutation",
        ("timeout",),
        f"Session {KEY} store is busy; try again.",
        {"commit_timeout": SHORT},
    ),
    Control("transcripts.archive", "fail", "archive", ("error", "error", "error")),
    Control("bindings.unbind", "fail", "unbind", ("error", "error", "error")),
]


@pytest.mark.parametrize("case", CONTROLS, ids=lambda c: f"{c.op}={c.mode}")
async def test_host_outcome_leads_where_the_table_says(case: Control) -> None:
    rig = make_rig(make_session_reset, **case.timeouts)
    old_id, old_path = full_setup(rig)
    old_bytes = rig.host.transcripts.files[old_path]
    rig.host.controls.modes[case.op] = case.mode
    before = rig.store_bytes()
    reply = await rig.service.reset(KEY)
    (run_id,) = rig.run_ids()
    assert reply["run_id"] == run_id
    assert case.op in rig.host.controls.ops()
    attempts = rig.finished(run_id, case.step)
    assert tuple(r.outcome for r in attempts) == case.outcomes
    for record in attempts:  # the journal says why each attempt did not end ok
        assert record.error is not None and not record.forced
    upto = STEPS.index(case.step)
    assert rig.path(run_id)[:upto] == [(s, "ok") for s in STEPS[:upto]]
    if case.fails_with is not None:
        fail_reply(reply, case.fails_with)
        assert len(rig.path(run_id)) == upto + len(case.outcomes)
        assert rig.store_bytes() == before
        assert rig.host.transcripts.files[old_path] == old_bytes
        assert rig.host.bindings.threads[CANONICAL] == ["thread-1", "thread-2"]
        return
    assert reply["ok"] is True
    assert rig.end(run_id).status == "succeeded"
    assert rig.path(run_id)[upto + len(case.outcomes) :] == [(s, "ok") for s in STEPS[upto + 1 :]]
    new_entry = rig.host.store.entries()[CANONICAL]
    assert new_entry == reply["entry"] and new_entry["sessionId"] != old_id


async def test_archive_failure_rolls_forward_and_loses_nothing() -> None:
    rig = make_rig()
    old_id, old_path = full_setup(rig)
    old_bytes = rig.host.transcripts.files[old_path]
    rig.host.controls.modes["transcripts.archive"] = "fail"
    reply = await rig.service.reset(KEY)
    assert reply["ok"] is True
    (run_id,) = rig.run_ids()
    errors = [r.error for r in rig.finished(run_id, "archive")]
    assert [e.type for e in errors if e] == ["OSError"] * 3
    assert rig.finished(run_id, "unbind")[-1].outcome == "ok"
    # The entry stays rotated (no rollback); the old transcript is still where it was.
    assert rig.host.store.entries()[CANONICAL]["sessionId"] == reply["entry"]["sessionId"]
    assert reply["entry"]["sessionId"] != old_id
    assert rig.host.transcripts.files[old_path] == old_bytes
    assert CANONICAL not in rig.host.bindings.threads
    # The new session's transcript exists all the same (#46250: none was ever written).
    new_file = Path(reply["entry"]["sessionFile"])
    header = orjson.loads(rig.host.transcripts.files[new_file].splitlines()[0])
    assert header["id"] == reply["entry"]["sessionId"]


async def test_a_failed_tab_close_is_recorded_and_does_not_fail_the_reset() -> None:
    rig = make_rig()
    full_setup(rig)
    rig.host.controls.modes["runtime.close_browser_tabs"] = "fail"
    reply = await rig.service.reset(KEY)
    assert reply["ok"] is True
    (run_id,) = rig.run_ids()
    (cleanup,) = rig.finished(run_id, "runtime_cleanup")
    assert cleanup.outcome == "ok"
    assert str(cleanup.result["tabs_closed"]).startswith("error: RuntimeError")


# -- hook_fired ----------------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "action"), [("new", "new"), ("reset", "reset"), ("x", "reset")])
async def test_command_hook_fires_once_before_anything_destructive(
    reason: str, action: str
) -> None:
    rig = make_rig()
    rig.host.hooks.command_handlers = True
    old_id, old_path = seed(rig.host, CANONICAL, label="dev")
    reply = await rig.service.reset(KEY, reason=reason, command_source="gateway:sessions.reset")
    assert reply["ok"] is True
    commands = [(name, ctx) for name, ctx in rig.host.hooks.events if name.startswith("command")]
    assert len(commands) == 1
    name, context = commands[0]
    assert name == f"command:{action}"
    assert context["key"] == CANONICAL
    assert context["commandSource"] == "gateway:sessions.reset"
    previous = context["previousSessionEntry"]
    assert previous["sessionId"] == old_id and previous["sessionFile"] == str(old_path)
    assert previous["label"] == "dev"
    ops = rig.host.controls.ops()
    assert ops.count("hooks.command") == 1
    assert ops.index("hooks.command") < ops.index("runtime.clear_queues")
    (run_id,) = rig.run_ids()
    assert rig.planned(run_id, "command_hook") == [action]
    assert rig.finished(run_id, "hook_fired")[0].result == "fired"


async def test_command_hook_not_called_without_handlers() -> None:
    rig = make_rig()
    seed(rig.host, CANONICAL)
    reply = await rig.service.reset(KEY, reason="new")
    assert reply["ok"] is True
    assert "hooks.command" not in rig.host.controls.ops()
    assert rig.host.hooks.events == []
    (run_id,) = rig.run_ids()
    assert rig.finished(run_id, "hook_fired")[0].result == "no handlers"


async def test_command_hook_for_a_key_without_entry_has_no_previous_entry() -> None:
    rig = make_rig()
    rig.host.hooks.command_handlers = True
    assert (await rig.service.reset(KEY))["ok"] is True
    ((_, context),) = rig.host.hooks.events
    assert context["previousSessionEntry"] is None


async def test_command_hook_is_not_repeated_when_an_interrupted_run_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = make_rig()
    rig.host.hooks.command_handlers = True
    old_id, _ = seed(rig.host, CANONICAL)
    hooks = rig.host.hooks
    inside = anyio.Event()
    real_command = hooks.command

    async def stuck(action: str, key: str, context: dict[str, Any]) -> None:
        await real_command(action, key, context)
        inside.set()
        await anyio.sleep_forever()

    monkeypatch.setattr(hooks, "command", stuck)
    async with anyio.create_task_group() as tg:
        tg.start_soon(rig.service.reset, KEY)
        await inside.wait()
        tg.cancel_scope.cancel()  # the process "dies" inside the hook
    assert rig.run_ids() == []  # unfinished
    monkeypatch.setattr(hooks, "command", real_command)

    # A new engine on the same journal (a restart) resumes the run.
    engine = Engine(rig.journal, clock=FakeClock())
    SessionService(engine, rig.host)
    report = await engine.recover()
    assert [r.status for r in report.resumed] == ["succeeded"]
    run_id = report.resumed[0].run_id
    assert [r.outcome for r in rig.finished(run_id, "hook_fired")] == ["ok"]
    assert rig.finished(run_id, "hook_fired")[0].result == "fired before a crash; not repeated"
    assert [n for n, _ in hooks.events] == ["command:reset"]
    assert rig.host.controls.ops().count("hooks.command") == 1
    assert rig.host.store.entries()[CANONICAL]["sessionId"] != old_id


# -- runtime_cleanup -----------------------------------------------------------------------


async def test_a_run_that_never_ends_fails_the_reset_still_active() -> None:
    rig = make_rig(make_session_reset, cleanup_timeout=SHORT)
    sid, path = seed(rig.host, CANONICAL, acp={"backend": "acpx"})
    rig.host.runtime.active_runs.add(sid)
    before = rig.store_bytes()
    reply = await rig.service.reset(KEY)
    fail_reply(reply, STILL_ACTIVE)  # the raw key, not the canonical one
    (run_id,) = rig.run_ids()
    assert rig.path(run_id) == [("hook_fired", "ok"), ("runtime_cleanup", "timeout")]
    calls = rig.host.controls.calls
    assert ("runtime.abort_run", (sid,)) in calls
    assert ("runtime.clear_bootstrap", (CANONICAL,)) in calls  # even on timeout
    assert not {"acp.cancel", "acp.close", "store.update"} & set(rig.host.controls.ops())
    assert rig.store_bytes() == before
    assert path in rig.host.transcripts.files


async def test_a_run_that_ends_during_the_wait_lets_the_reset_succeed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = make_rig()
    sid, _ = seed(rig.host, CANONICAL)
    runtime = rig.host.runtime
    runtime.active_runs.add(sid)
    waiting = anyio.Event()
    real_wait = runtime.wait_run_end

    async def wait_run_end(session_id: str) -> None:
        waiting.set()
        await real_wait(session_id)

    monkeypatch.setattr(runtime, "wait_run_end", wait_run_end)
    replies: list[dict[str, Any]] = []

    async def reset() -> None:
        replies.append(await rig.service.reset(KEY))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reset)
        await waiting.wait()
        assert "store.update" not in rig.host.controls.ops()  # still waiting for the run
        runtime.end_run(sid)
    (reply,) = replies
    assert reply["ok"] is True
    (run_id,) = rig.run_ids()
    result = rig.finished(run_id, "runtime_cleanup")[0].result
    assert result["run_aborted"] is True


async def test_cleanup_clears_queues_of_every_store_key_and_the_session_id() -> None:
    rig = make_rig()
    sid, _ = seed(rig.host, "Discord:Group:Dev")
    runtime = rig.host.runtime
    runtime.queues.update(
        {"Discord:Group:Dev": 1, KEY: 2, CANONICAL: 4, sid: 8, "agent:main:other": 16}
    )
    reply = await rig.service.reset(KEY)
    assert reply["ok"] is True
    (queues,) = [args[0] for op, args in rig.host.controls.calls if op == "runtime.clear_queues"]
    assert set(queues) == {"Discord:Group:Dev", KEY, CANONICAL, sid}
    assert runtime.queues == {"agent:main:other": 16}
    (run_id,) = rig.run_ids()
    assert rig.finished(run_id, "runtime_cleanup")[0].result["queued_dropped"] == 15
    assert ("runtime.stop_subagents", (CANONICAL,)) in rig.host.controls.calls
    assert ("runtime.clear_bootstrap", (CANONICAL,)) in rig.host.controls.calls


# -- acp_cancel / acp_close ----------------------------------------------------------------


async def test_acp_steps_skip_an_entry_without_acp_metadata() -> None:
    rig = make_rig()
    seed(rig.host, CANONICAL)
    assert (await rig.service.reset(KEY))["ok"] is True
    assert not {"acp.cancel", "acp.close"} & set(rig.host.controls.ops())
    (run_id,) = rig.run_ids()
    for step in ("acp_cancel", "acp_close"):
        (record,) = rig.finished(run_id, step)
        assert record.outcome == "ok" and str(record.result).startswith("skipped")


@pytest.mark.parametrize("stored_under", [CANONICAL, "Discord:Group:Dev"])
async def test_acp_cancel_then_close_under_the_key_the_entry_is_stored_under(
    stored_under: str,
) -> None:
    rig = make_rig()
    seed(rig.host, stored_under, acp={"backend": "acpx"})
    assert (await rig.service.reset(KEY))["ok"] is True
    acp = [(op, args) for op, args in rig.host.controls.calls if op.startswith("acp.")]
    assert acp == [
        ("acp.cancel", (stored_under, "session-reset")),
        ("acp.close", (stored_under, "session-reset")),
    ]
    (run_id,) = rig.run_ids()
    assert [r.result for r in rig.finished(run_id, "acp_cancel")] == ["cancelled"]
    assert [r.result for r in rig.finished(run_id, "acp_close")] == ["closed"]


@pytest.mark.parametrize("op", ["acp.cancel", "acp.close"])
async def test_acp_timeout_leaves_store_and_transcript_untouched(op: str) -> None:
    rig = make_rig(make_session_reset, acp_timeout=SHORT)
    _, path = seed(rig.host, CANONICAL, acp={"backend": "acpx"})
    transcript_before = rig.host.transcripts.files[path]
    rig.host.controls.modes[op] = "hang"
    before = rig.store_bytes()
    fail_reply(await rig.service.reset(KEY), STILL_ACTIVE)
    assert rig.store_bytes() == before
    assert rig.host.transcripts.files == {path: transcript_before}
    assert "store.update" not in rig.host.controls.ops()


# -- unbind --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (KEY, "acp"),
        ("agent:main:subagent:0b6f0c58-8f4e-4a0e-9d6b-0c3c7b4f1a2e", "subagent"),
    ],
)
async def test_unbind_says_farewell_once_per_thread_and_fires_subagent_ended(
    key: str, kind: str
) -> None:
    rig = make_rig()
    canonical = rig.service.resolve(key).canonical
    seed(rig.host, canonical)
    rig.host.hooks.subagent_handlers = True
    rig.host.bindings.threads[canonical] = ["t1", "t2"]
    rig.host.bindings.threads["agent:main:other"] = ["t3"]
    reply = await rig.service.reset(key)
    assert reply["ok"] is True
    (run_id,) = rig.run_ids()
    assert canonical not in rig.host.bindings.threads
    assert rig.host.bindings.threads["agent:main:other"] == ["t3"]
    assert sorted(thread for _, thread in rig.host.bindings.farewells) == ["t1", "t2"]
    assert ("bindings.unbind", (canonical, kind, "session-reset")) in rig.host.controls.calls
    assert rig.host.hooks.events == [
        (
            "subagent_ended",
            {
                "targetSessionKey": canonical,
                "targetKind": kind,
                "reason": "session-reset",
                "sendFarewell": True,
                "outcome": "reset",
            },
        )
    ]
    assert rig.finished(run_id, "unbind")[0].result == {
        "unbound": ["t1", "t2"],
        "subagent_ended": "fired",
    }


async def test_subagent_ended_not_fired_without_handlers_but_threads_unbound() -> None:
    rig = make_rig()
    seed(rig.host, CANONICAL)
    rig.host.bindings.threads[CANONICAL] = ["t1"]
    assert (await rig.service.reset(KEY))["ok"] is True
    assert rig.host.hooks.events == []
    assert CANONICAL not in rig.host.bindings.threads
    assert [t for _, t in rig.host.bindings.farewells] == ["t1"]


async def test_subagent_ended_fires_once_even_when_the_unbind_step_is_retried() -> None:
    rig = make_rig()
    seed(rig.host, CANONICAL)
    rig.host.hooks.subagent_handlers = True
    rig.host.bindings.threads[CANONICAL] = ["t1", "t2"]
    rig.host.controls.modes["hooks.subagent_ended"] = "fail"
    assert (await rig.service.reset(KEY))["ok"] is True
    (run_id,) = rig.run_ids()
    assert [r.outcome for r in rig.finished(run_id, "unbind")] == ["error", "ok"]
    assert [name for name, _ in rig.host.hooks.events] == ["subagent_ended"]
    assert sorted(t for _, t in rig.host.bindings.farewells) == ["t1", "t2"]


# -- the data model ------------------------------------------------------------------------


async def test_reset_rotates_the_entry_archives_and_writes_the_new_header() -> None:
    rig = make_rig()
    other_id, other_path = seed(rig.host, "agent:main:other")
    old_id, old_path = seed(
        rig.host, CANONICAL, label="dev", compactionCount=3, contextTokens=9, unknownField=1
    )
    old_bytes = rig.host.transcripts.files[old_path]
    # The other entry as another writer laid it out: spacing, key order, number spelling.
    other_raw = b'{ "updatedAt": 1.7e12, "sessionId": "%s",\n "sessionFile": "%s", "x": [1,2] }' % (
        other_id.encode(),
        str(other_path).encode(),
    )
    dev_raw = orjson.dumps(rig.host.store.entries()[CANONICAL])
    rig.host.store.files["main"] = (
        (b'{\n  "agent:main:other": ' + other_raw + b',\n  "' + CANONICAL.encode() + b'": ')
        + dev_raw
        + b"\n}\n"
    )

    reply = await rig.service.reset(KEY)
    (run_id,) = rig.run_ids()
    entry = reply["entry"]
    assert reply == {"ok": True, "key": CANONICAL, "entry": entry, "run_id": run_id}
    new_id = entry["sessionId"]
    assert str(uuid.UUID(new_id)) == new_id and uuid.UUID(new_id).version == 4
    assert new_id != old_id
    assert entry["label"] == "dev"
    assert not {"compactionCount", "contextTokens", "unknownField"} & set(entry)

    store = rig.host.store.entries()
    assert store[CANONICAL] == entry
    assert set(store) == {"agent:main:other", CANONICAL}
    assert other_raw in rig.store_bytes()  # the other entry, byte for byte

    files = rig.host.transcripts.files
    archived = old_path.with_name(f"{old_path.name}.reset.{stamp(entry['updatedAt'])}")
    assert re.search(r"\.reset\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$", str(archived))
    assert old_path not in files and files[archived] == old_bytes
    new_path = Path(entry["sessionFile"])
    assert new_path == SESSIONS / f"{new_id}.jsonl"
    header = header_of(files[new_path])
    assert (header["type"], header["version"], header["id"]) == ("session", 3, new_id)
    assert files[other_path] == transcript(other_id, "hello from agent:main:other", "bye")
    assert set(files) == {archived, new_path, other_path}

    (plan,) = rig.planned(run_id, "commit")
    assert plan["new_session_id"] == new_id and plan["expected_old_id"] == old_id
    assert plan["archive"] == [[str(old_path), str(archived)]]


@pytest.mark.parametrize(
    ("key", "alias", "canonical"),
    [
        ("discord:group:dev", "Discord:Group:Dev", CANONICAL),
        ("discord:group:dev", "agent:main:Discord:Group:DEV", CANONICAL),
        ("main", "agent:main:MAIN", "agent:main:main"),
        ("agent:main:main", "agent:main:Main", "agent:main:main"),
    ],
)
async def test_alias_entry_is_migrated_to_the_canonical_key_and_pruned(
    key: str, alias: str, canonical: str
) -> None:
    rig = make_rig()
    seed(rig.host, "agent:main:other")
    old_id, old_path = seed(rig.host, alias, label="legacy", thinkingLevel="high")
    reply = await rig.service.reset(key)
    assert reply["ok"] is True and reply["key"] == canonical
    store = rig.host.store.entries()
    assert set(store) == {"agent:main:other", canonical}
    entry = store[canonical]
    assert (entry["label"], entry["thinkingLevel"]) == ("legacy", "high")
    assert entry["sessionId"] != old_id
    assert old_path not in rig.host.transcripts.files
    assert any(p.name.startswith(f"{old_id}.jsonl.reset.") for p in rig.host.transcripts.files)


@pytest.mark.parametrize("fresher", ["canonical", "alias"])
async def test_freshest_of_canonical_and_alias_wins(fresher: str) -> None:
    rig = make_rig()
    alias = "Discord:Group:Dev"
    canon_id, canon_path = seed(rig.host, CANONICAL, label="canonical", updatedAt=100)
    alias_id, alias_path = seed(rig.host, alias, label="alias", updatedAt=200)
    if fresher == "canonical":
        store = rig.host.store.entries()
        store[CANONICAL]["updatedAt"] = 300
        rig.host.store.put("main", store)
    reply = await rig.service.reset(KEY)
    assert reply["ok"] is True
    store = rig.host.store.entries()
    assert set(store) == {CANONICAL}
    assert store[CANONICAL]["label"] == fresher
    (run_id,) = rig.run_ids()
    (plan,) = rig.planned(run_id, "commit")
    assert plan["expected_old_id"] == (canon_id if fresher == "canonical" else alias_id)
    archived_src = canon_path if fresher == "canonical" else alias_path
    assert archived_src not in rig.host.transcripts.files


async def test_reset_of_a_key_without_entry_creates_a_bare_entry_and_unbinds_nothing() -> None:
    rig = make_rig()
    seed(rig.host, "agent:main:other")
    rig.host.hooks.subagent_handlers = True
    rig.host.bindings.threads[CANONICAL] = ["t1"]
    reply = await rig.service.reset(KEY)
    assert reply["ok"] is True
    entry = reply["entry"]
    assert set(entry) == {
        "sessionId",
        "sessionFile",
        "updatedAt",
        "systemSent",
        "abortedLastRun",
        "model",
        "modelProvider",
        "inputTokens",
        "outputTokens",
        "totalTokens",
        "totalTokensFresh",
    }
    assert rig.host.store.entries()[CANONICAL] == entry
    assert "bindings.unbind" not in rig.host.controls.ops()
    assert rig.host.bindings.threads[CANONICAL] == ["t1"]
    assert rig.host.bindings.farewells == [] and rig.host.hooks.events == []
    header = header_of(rig.host.transcripts.files[Path(entry["sessionFile"])])
    assert header["id"] == entry["sessionId"]
    assert "transcripts.archive" not in rig.host.controls.ops()


async def test_resetting_twice_gives_two_ids_two_archives_and_loses_no_transcript() -> None:
    rig = make_rig()
    old_id, old_path = seed(rig.host, CANONICAL)
    old_bytes = rig.host.transcripts.files[old_path]
    first = await rig.service.reset(KEY)
    first_path = Path(first["entry"]["sessionFile"])
    first_bytes = rig.host.transcripts.files[first_path]
    second = await rig.service.reset(KEY)
    ids = {old_id, first["entry"]["sessionId"], second["entry"]["sessionId"]}
    assert len(ids) == 3
    files = rig.host.transcripts.files
    archive_1 = old_path.with_name(f"{old_path.name}.reset.{stamp(first['entry']['updatedAt'])}")
    archive_2 = first_path.with_name(
        f"{first_path.name}.reset.{stamp(second['entry']['updatedAt'])}"
    )
    second_path = Path(second["entry"]["sessionFile"])
    assert set(files) == {archive_1, archive_2, second_path}
    assert files[archive_1] == old_bytes and files[archive_2] == first_bytes
    assert header_of(files[second_path])["id"] == second["entry"]["sessionId"]
    assert rig.host.store.entries() == {CANONICAL: second["entry"]}


async def test_commit_refuses_an_entry_rotated_after_the_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit is a compare-and-swap on the snapshot's id: a newer session is kept."""
    rig = make_rig()
    old_id, _ = seed(rig.host, CANONICAL)
    store = rig.host.store
    real_update = store.update
    other_id = str(uuid.uuid4())

    async def racing_update(agent_id: str, mutate: Any, **kw: Any) -> Any:
        seed(rig.host, CANONICAL, session_id=other_id)  # another writer rotated it
        return await real_update(agent_id, mutate, **kw)

    monkeypatch.setattr(store, "update", racing_update)
    reply = await rig.service.reset(KEY)
    assert reply["ok"] is False and reply["error"]["code"] == "UNAVAILABLE"
    assert old_id in reply["error"]["message"] and other_id in reply["error"]["message"]
    assert rig.host.store.entries()[CANONICAL]["sessionId"] == other_id
    assert SESSIONS / f"{other_id}.jsonl" in rig.host.transcripts.files
