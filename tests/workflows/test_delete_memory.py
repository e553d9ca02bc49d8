"""session_delete on the memory host: guards, the reply, archive and unbind, the capture race."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Outcome, StepFinished
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
from workflows.session_delete import make_session_delete

pytestmark = pytest.mark.anyio

STEPS = ("runtime_cleanup", "acp_cancel", "acp_close", "store_mutation", "archive", "unbind")
DELETED_SUFFIX = re.compile(r"\.deleted\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$")


# -- helpers ------------------------------------------------------------------------------


# -- guards: nothing starts ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["main", "agent:main:main", "agent:main:MAIN", "  main  "])
async def test_the_main_session_cannot_be_deleted(key: str) -> None:
    rig = make_rig()
    seed(rig.host, "agent:main:main")
    before = rig.store_bytes()
    reply = await rig.service.delete(key)
    assert reply == {
        "ok": False,
        "error": {
            "code": "INVALID_REQUEST",
            "message": "Cannot delete the main session (agent:main:main).",
        },
    }
    assert rig.journal.records == []
    assert rig.host.controls.calls == []
    assert rig.store_bytes() == before


async def test_webchat_clients_cannot_delete() -> None:
    rig = make_rig()
    seed(rig.host, CANONICAL)
    before = rig.store_bytes()
    reply = await rig.service.delete(KEY, client_mode="webchat")
    assert reply["ok"] is False
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert reply["error"]["message"].startswith("webchat clients cannot delete sessions")
    assert rig.journal.records == []
    assert rig.host.controls.calls == []
    assert rig.store_bytes() == before


async def test_a_non_webchat_client_mode_may_delete() -> None:
    rig = make_rig()
    seed(rig.host, CANONICAL)
    reply = await rig.service.delete(KEY, client_mode="control-ui")
    assert reply["ok"] is True and reply["deleted"] is True


# -- the reply and the data ----------------------------------------------------------------


async def test_delete_removes_entry_and_aliases_archives_and_replies() -> None:
    rig = make_rig()
    alias_id, alias_path = seed(rig.host, "Discord:Group:Dev", updatedAt=1)
    sid, path = full_setup(rig)  # also stores agent:main:other
    other = rig.host.store.entries()["agent:main:other"]
    other_path = Path(other["sessionFile"])
    data = rig.host.transcripts.files[path]
    reply = await rig.service.delete(KEY)
    (run_id,) = rig.run_ids()
    assert reply == {
        "ok": True,
        "key": CANONICAL,
        "deleted": True,
        "archived": reply["archived"],
        "run_id": run_id,
    }
    (archived,) = reply["archived"]
    assert archived.startswith(f"{path}.deleted.") and DELETED_SUFFIX.search(archived)
    (plan,) = rig.planned(run_id, "archive")
    assert plan["moves"] == [[str(path), archived]]
    files = rig.host.transcripts.files
    assert path not in files and files[Path(archived)] == data
    assert other_path in files and alias_path in files  # only the deleted id's transcript
    assert set(rig.host.store.entries()) == {"agent:main:other"}
    assert rig.host.store.entries()["agent:main:other"] == other
    assert rig.planned(run_id, "deleted") == [
        {"had_entry": True, "session_id": sid, "session_file": str(path)}
    ]
    assert alias_id != sid
    assert [s for s, o in rig.path(run_id) if o == "ok"] == list(STEPS)


async def test_delete_fires_no_command_hook() -> None:
    rig = make_rig()
    full_setup(rig)
    assert (await rig.service.delete(KEY))["ok"] is True
    assert "hooks.command" not in rig.host.controls.ops()
    assert not [name for name, _ in rig.host.hooks.events if name.startswith("command")]
    (run_id,) = rig.run_ids()
    assert "hook_fired" not in {step for step, _ in rig.path(run_id)}


async def test_a_repeated_delete_deletes_nothing() -> None:
    rig = make_rig()
    _, path = full_setup(rig)
    first = await rig.service.delete(KEY)
    assert path not in rig.host.transcripts.files
    files = dict(rig.host.transcripts.files)
    farewells = list(rig.host.bindings.farewells)
    events = list(rig.host.hooks.events)
    second = await rig.service.delete(KEY)
    assert first["deleted"] is True and len(first["archived"]) == 1
    assert second["ok"] is True
    assert (second["deleted"], second["archived"]) == (False, [])
    assert rig.host.transcripts.files == files
    assert rig.host.bindings.farewells == farewells and rig.host.hooks.events == events


async def test_delete_transcript_false_keeps_the_transcript() -> None:
    rig = make_rig()
    _, path = full_setup(rig)
    data = rig.host.transcripts.files[path]
    reply = await rig.service.delete(KEY, delete_transcript=False)
    assert (reply["ok"], reply["deleted"], reply["archived"]) == (True, True, [])
    assert rig.host.transcripts.files[path] == data
    assert not [p for p in rig.host.transcripts.files if ".deleted." in p.name]
    assert "transcripts.archive" not in rig.host.controls.ops()
    assert CANONICAL not in rig.host.store.entries()
    assert CANONICAL not in rig.host.bindings.threads  # still unbound


@pytest.mark.parametrize("emit_hooks", [True, False])
async def test_unbind_always_subagent_ended_only_with_emit_hooks(emit_hooks: bool) -> None:
    rig = make_rig()
    full_setup(rig)
    rig.host.bindings.threads["agent:main:other"] = ["thread-9"]
    reply = await rig.service.delete(KEY, emit_hooks=emit_hooks)
    assert reply["ok"] is True and reply["deleted"] is True
    (run_id,) = rig.run_ids()
    assert CANONICAL not in rig.host.bindings.threads
    assert rig.host.bindings.threads["agent:main:other"] == ["thread-9"]
    assert rig.host.bindings.farewells == [(run_id, "thread-1"), (run_id, "thread-2")]
    assert ("bindings.unbind", (CANONICAL, "acp", "session-delete")) in rig.host.controls.calls
    ended = [event for name, event in rig.host.hooks.events if name == "subagent_ended"]
    if emit_hooks:
        assert ended == [
            {
                "targetSessionKey": CANONICAL,
                "targetKind": "acp",
                "reason": "session-delete",
                "sendFarewell": True,
                "outcome": "deleted",
            }
        ]
    else:
        assert ended == []
        assert "hooks.subagent_ended" not in rig.host.controls.ops()
        assert rig.finished(run_id, "unbind")[0].result["subagent_ended"] == "disabled"


async def test_subagent_key_unbinds_as_subagent() -> None:
    rig = make_rig()
    key = "agent:main:subagent:0b6f0c58-8f4e-4a0e-9d6b-0c3c7b4f1a2e"
    seed(rig.host, key)
    rig.host.hooks.subagent_handlers = True
    rig.host.bindings.threads[key] = ["t1"]
    assert (await rig.service.delete(key))["deleted"] is True
    assert ("bindings.unbind", (key, "subagent", "session-delete")) in rig.host.controls.calls
    ((_, event),) = rig.host.hooks.events
    assert (event["targetKind"], event["outcome"]) == ("subagent", "deleted")


async def test_unknown_key_deletes_nothing_and_unbinds_nothing() -> None:
    rig = make_rig()
    seed(rig.host, "agent:main:other")
    rig.host.hooks.subagent_handlers = True
    rig.host.bindings.threads[CANONICAL] = ["t1"]
    before = rig.store_bytes()
    reply = await rig.service.delete(KEY)
    assert (reply["ok"], reply["key"], reply["deleted"], reply["archived"]) == (
        True,
        CANONICAL,
        False,
        [],
    )
    assert rig.store_bytes() == before
    assert "bindings.unbind" not in rig.host.controls.ops()
    assert rig.host.bindings.threads[CANONICAL] == ["t1"]
    assert rig.host.bindings.farewells == [] and rig.host.hooks.events == []


async def test_acp_cleanup_uses_reason_session_delete() -> None:
    rig = make_rig()
    full_setup(rig)
    assert (await rig.service.delete(KEY))["ok"] is True
    acp = [(op, args) for op, args in rig.host.controls.calls if op.startswith("acp.")]
    assert acp == [
        ("acp.cancel", (CANONICAL, "session-delete")),
        ("acp.close", (CANONICAL, "session-delete")),
    ]


# -- the deleted id is the one captured under the lock --------------------------------------


async def test_archive_names_the_transcript_of_the_entry_actually_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spec §2 race: the snapshot sees the old id; a reset rotates the entry before the commit."""
    rig = make_rig()
    old_id, old_path = seed(rig.host, CANONICAL)
    old_data = rig.host.transcripts.files[old_path]
    store, files = rig.host.store, rig.host.transcripts.files
    real_update = store.update
    new_id = str(uuid.uuid4())
    new_path = SESSIONS / f"{new_id}.jsonl"
    old_archive = old_path.with_name(f"{old_path.name}.reset.2026-01-01T00-00-00.000Z")

    async def racing_update(agent_id: str, mutate: Any, **kw: Any) -> Any:
        # Another reset of the same session lands between the snapshot and this commit.
        files[old_archive] = files.pop(old_path)
        seed(rig.host, CANONICAL, session_id=new_id)
        return await real_update(agent_id, mutate, **kw)

    monkeypatch.setattr(store, "update", racing_update)
    reply = await rig.service.delete(KEY)
    assert reply["ok"] is True and reply["deleted"] is True
    (run_id,) = rig.run_ids()
    # The cleanup steps ran on the snapshot (the old id)...
    assert ("runtime.abort_run", (old_id,)) in rig.host.controls.calls
    # ...but what was deleted, journaled and archived is the entry the lock saw.
    assert rig.planned(run_id, "deleted") == [
        {"had_entry": True, "session_id": new_id, "session_file": str(new_path)}
    ]
    (archived,) = reply["archived"]
    assert archived.startswith(f"{new_path}.deleted.") and DELETED_SUFFIX.search(archived)
    assert new_path not in files and files[Path(archived)] == transcript(
        new_id, f"hello from {CANONICAL}", "bye"
    )
    assert files[old_archive] == old_data  # the other reset's archive is left alone
    assert rig.host.store.entries() == {}


async def test_an_entry_that_appears_before_the_commit_is_deleted_and_unbound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The locked read, not the (empty) snapshot, decides archive and unbind."""
    rig = make_rig()
    seed(rig.host, "agent:main:other")
    rig.host.bindings.threads[CANONICAL] = ["t1"]
    store = rig.host.store
    real_update = store.update
    appeared: list[Path] = []

    async def racing_update(agent_id: str, mutate: Any, **kw: Any) -> Any:
        appeared.append(seed(rig.host, CANONICAL)[1])
        return await real_update(agent_id, mutate, **kw)

    monkeypatch.setattr(store, "update", racing_update)
    reply = await rig.service.delete(KEY)
    assert (reply["ok"], reply["deleted"]) == (True, True)
    (path,) = appeared
    assert [Path(p).name.split(".deleted.")[0] for p in reply["archived"]] == [path.name]
    assert CANONICAL not in rig.host.bindings.threads
    assert set(rig.host.store.entries()) == {"agent:main:other"}


# -- the outcome table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Forced:
    state: str
    outcome: Outcome
    fails_with: str | None = None
    attempts: int = 1


FORCED = [
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
    Forced("archive", "timeout", attempts=3),
    Forced("archive", "error", attempts=3),
    Forced("unbind", "ok"),
    Forced("unbind", "timeout", attempts=3),
    Forced("unbind", "error", attempts=3),
]


@pytest.mark.parametrize("case", FORCED, ids=lambda c: f"{c.state}={c.outcome}")
async def test_forced_outcome_leads_where_the_table_says(case: Forced) -> None:
    rig = make_rig()
    full_setup(rig)
    before = rig.store_bytes()
    reply = await rig.service.delete(KEY, force={case.state: case.outcome})
    (run_id,) = rig.run_ids()
    assert reply["run_id"] == run_id
    upto = STEPS.index(case.state)
    expected = [(s, "ok") for s in STEPS[:upto]] + [(case.state, case.outcome)] * case.attempts
    if case.fails_with is None:
        expected += [(s, "ok") for s in STEPS[upto + 1 :]]
    assert rig.path(run_id) == expected
    finished = [r for r in rig.records(run_id) if isinstance(r, StepFinished)]
    assert {r.step for r in finished if r.forced} == {case.state}
    if case.fails_with is None:
        assert (reply["ok"], reply["deleted"]) == (True, True)
        assert CANONICAL not in rig.host.store.entries()
    else:
        fail_reply(reply, case.fails_with)
        assert rig.store_bytes() == before


@pytest.mark.parametrize(
    ("state", "archived"), [("store_mutation", None), ("archive", [])], ids=str
)
async def test_forced_ok_of_a_step_the_reply_reads_still_gets_a_reply(
    state: str, archived: list[str] | None
) -> None:
    """Forcing ``ok`` (the step does not run, its result is None) must not crash the reply."""
    rig = make_rig()
    full_setup(rig)
    reply = await rig.service.delete(KEY, force={state: "ok"})
    (run_id,) = rig.run_ids()
    assert rig.end(run_id).status == "succeeded"
    assert reply["ok"] is True
    assert (reply["key"], reply["run_id"]) == (CANONICAL, run_id)
    if archived is not None:
        assert reply["archived"] == archived


@dataclass(frozen=True)
class Control:
    op: str
    mode: str
    step: str
    outcomes: tuple[str, ...]
    fails_with: str | None = None
    timeout: str | None = None


CONTROLS = [
    Control(
        "runtime.clear_queues",
        "fail",
        "runtime_cleanup",
        ("error",),
        f"Session {KEY} cleanup failed: runtime.clear_queues failed (memory host)",
    ),
    Control(
        "runtime.wait_run_end",
        "hang",
        "runtime_cleanup",
        ("timeout",),
        STILL_ACTIVE,
        "cleanup_timeout",
    ),
    Control("acp.cancel", "hang", "acp_cancel", ("timeout",), STILL_ACTIVE, "acp_timeout"),
    Control("acp.cancel", "fail", "acp_cancel", ("error",)),
    Control("acp.close", "hang", "acp_close", ("timeout",), STILL_ACTIVE, "acp_timeout"),
    Control("acp.close", "fail", "acp_close", ("error",)),
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
        "commit_timeout",
    ),
    Control("transcripts.archive", "fail", "archive", ("error", "error", "error")),
    Control("bindings.unbind", "fail", "unbind", ("error", "error", "error")),
]


@pytest.mark.parametrize("case", CONTROLS, ids=lambda c: f"{c.op}={c.mode}")
async def test_host_outcome_leads_where_the_table_says(case: Control) -> None:
    rig = make_rig(make_session_delete, **({case.timeout: SHORT} if case.timeout else {}))
    _, path = full_setup(rig)
    data = rig.host.transcripts.files[path]
    rig.host.controls.modes[case.op] = case.mode
    before = rig.store_bytes()
    reply = await rig.service.delete(KEY)
    (run_id,) = rig.run_ids()
    attempts = rig.finished(run_id, case.step)
    assert tuple(r.outcome for r in attempts) == case.outcomes
    assert all(r.error is not None for r in attempts)
    upto = STEPS.index(case.step)
    assert rig.path(run_id)[:upto] == [(s, "ok") for s in STEPS[:upto]]
    if case.fails_with is not None:
        fail_reply(reply, case.fails_with)
        assert len(rig.path(run_id)) == upto + len(case.outcomes)
        assert rig.store_bytes() == before
        assert rig.host.transcripts.files[path] == data
        assert rig.host.bindings.threads[CANONICAL] == ["thread-1", "thread-2"]
        return
    assert (reply["ok"], reply["deleted"]) == (True, True)
    assert rig.path(run_id)[upto + len(case.outcomes) :] == [(s, "ok") for s in STEPS[upto + 1 :]]
    assert CANONICAL not in rig.host.store.entries()
    if case.step == "archive":  # rolled forward: entry gone, transcript kept, still unbound
        assert reply["archived"] == [] and rig.host.transcripts.files[path] == data
        assert CANONICAL not in rig.host.bindings.threads


async def test_an_active_run_that_never_ends_refuses_the_delete() -> None:
    rig = make_rig(make_session_delete, cleanup_timeout=SHORT)
    sid, path = full_setup(rig)
    rig.host.runtime.active_runs.add(sid)
    before = rig.store_bytes()
    fail_reply(await rig.service.delete(KEY), STILL_ACTIVE)
    assert ("runtime.abort_run", (sid,)) in rig.host.controls.calls
    assert ("runtime.clear_bootstrap", (CANONICAL,)) in rig.host.controls.calls
    assert rig.store_bytes() == before and path in rig.host.transcripts.files
