"""``runs list`` and ``runs show`` over journals written by real runs.

The runs: session resets on the memory host through the engine on a real file journal (one
succeeds, one fails UNAVAILABLE through an injected ACP timeout), a reset killed by SIGKILL
mid-archive in a child process (then recovered), and a run whose key, caller and error carry
terminal escapes.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator import SUCCEED, FileJournal, State, StepContext, WorkflowSpec, fail, open_engine
from orchestrator._runs_text import printable
from orchestrator._views import (
    Attempt,
    Entry,
    find_run,
    parse_since,
    select_runs,
    timeline,
    view_run,
)
from orchestrator.cli import journal_dir, main
from orchestrator.errors import UsageError
from orchestrator.testing import FakeClock
from tests.workflows.memory_rig import seed
from workflows.sessions.adapters.memory import MemoryHost
from workflows.sessions.demo import seed_state
from workflows.sessions.service import SessionService

ROOT = Path(__file__).resolve().parents[2]
KEY = "discord:group:dev"
CANONICAL = "agent:main:discord:group:dev"
MAIN = "agent:main:main"
DAY = 86400.0
EVIL_KEY = "evil\x1b]0;pwned\x07\nkey\u202e"
EVIL_CALLER = "me\x1b[2J"
EVIL_ERROR = "disk \x1b[31mgone\nreally"


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@dataclass
class Runs:
    state: Path
    ok: str
    failed: str
    killed: str
    old: str
    old_failed: str
    new_session_id: str


# -- making journals with real runs --------------------------------------------------------


def kill_reset(state: Path) -> None:
    """``orchestrator reset main`` in a child that SIGKILLs itself after the archive rename."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_CRASH")}
    env["ORCHESTRATOR_CRASH_AT"] = "archive.renamed"
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "reset", "main", "--state-dir", str(state)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stderr


async def memory_resets(state: Path, clock: FakeClock | None = None) -> dict[str, Any]:
    """A reset that succeeds and one that fails UNAVAILABLE, on the memory host."""
    journal = await FileJournal.open(journal_dir(state))
    async with open_engine(journal, clock=clock) as engine:
        host = MemoryHost()
        service = SessionService(engine, host)
        seed(host, CANONICAL, label="dev")
        ok = await service.reset(KEY, command_source="test:ok")
        failed = await service.reset(
            KEY, command_source="test:failed", force={"acp_cancel": "timeout"}
        )
    assert ok["ok"] is True and failed["ok"] is False
    return {"ok": ok, "failed": failed}


async def hostile_run(state: Path) -> str:
    """A run whose key, caller, planned value and error carry terminal escapes and newlines."""

    async def mint(ctx: StepContext) -> str:
        value = await ctx.plan("token", lambda: "tok\x1b[5m\n")
        await ctx.mark_applied("token", {"minted": value})
        return value

    async def boom(ctx: StepContext) -> None:
        raise RuntimeError(EVIL_ERROR)

    spec = WorkflowSpec(
        "hostile",
        [
            State("mint", mint, timeout=5, on={"ok": "boom", "timeout": SUCCEED, "error": SUCCEED}),
            State(
                "boom",
                boom,
                timeout=5,
                on={"ok": SUCCEED, "timeout": SUCCEED, "error": fail("BOOM", "{error}")},
            ),
        ],
    )
    journal = await FileJournal.open(journal_dir(state))
    async with open_engine(journal) as engine:
        engine.register(spec)
        result = await engine.run("hostile", EVIL_KEY, requested_by=EVIL_CALLER)
    assert result.status == "failed"
    return result.run_id


async def run_ids(state: Path) -> dict[str, list[str]]:
    journal = await FileJournal.open(journal_dir(state), repair=False)
    found: dict[str, list[str]] = {}
    for history in journal.runs():
        found.setdefault(history.started.key, []).append(history.run_id)
    return found


def make_runs(state: Path) -> Runs:
    """A seeded state dir with two runs three days old, a killed run, a succeeded, a failed."""
    state.mkdir(parents=True, exist_ok=True)
    seed_state(state)
    old = anyio.run(memory_resets, state, FakeClock(start=time.time() - 3 * DAY))
    kill_reset(state)
    new = anyio.run(memory_resets, state)
    (killed,) = anyio.run(run_ids, state)[MAIN]
    return Runs(
        state=state,
        ok=new["ok"]["run_id"],
        failed=new["failed"]["run_id"],
        killed=killed,
        old=old["ok"]["run_id"],
        old_failed=old["failed"]["run_id"],
        new_session_id=new["ok"]["entry"]["sessionId"],
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Read-only for the tests that use it (nothing here writes to it)."""
    return make_runs(tmp_path_factory.mktemp("views") / "state")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listed(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> list[dict[str, Any]]:
    code, out, err = cli(capsys, "runs", "list", "--state-dir", str(state), "--json", *argv)
    assert code == 0, err
    rows: list[dict[str, Any]] = orjson.loads(out)
    return rows


def shown(capsys: pytest.CaptureFixture[str], state: Path, run_id: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "runs", "show", run_id, "--state-dir", str(state), "--json")
    assert code == 0, err
    doc: dict[str, Any] = orjson.loads(out)
    return doc


def attempts(doc: dict[str, Any], step: str) -> list[dict[str, Any]]:
    return [e for e in doc["timeline"] if e["kind"] == "attempt" and e["step"] == step]


# -- runs list -----------------------------------------------------------------------------


def test_list_json_is_one_document_with_every_run_and_its_status(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = listed(capsys, runs.state)
    by_id = {row["run_id"]: row for row in rows}
    assert [r["run_id"] for r in rows] == [
        runs.old,
        runs.old_failed,
        runs.killed,
        runs.ok,
        runs.failed,
    ]
    assert by_id[runs.ok]["status"] == "succeeded"
    assert by_id[runs.failed]["status"] == "failed"
    assert by_id[runs.failed]["code"] == "UNAVAILABLE"
    assert by_id[runs.killed]["status"] == "interrupted"
    assert by_id[runs.killed]["ended_at"] is None
    assert by_id[runs.ok]["requested_by"] == "test:ok"
    assert by_id[runs.killed]["requested_by"] == "cli:reset"
    assert by_id[runs.ok]["key"] == CANONICAL and by_id[runs.ok]["workflow"] == "session_reset"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--status", "failed"], ["old_failed", "failed"]),
        (["--status", "interrupted"], ["killed"]),
        (["--status", "succeeded"], ["old", "ok"]),
        (["--status", "cancelled"], []),
        (["--key", MAIN], ["killed"]),
        (["--key", CANONICAL, "--status", "succeeded"], ["old", "ok"]),
        (["--key", "main"], []),
        (["--since", "1d"], ["killed", "ok", "failed"]),
        (["--since", "4d"], ["old", "old_failed", "killed", "ok", "failed"]),
        (["--since", "1d", "--status", "succeeded"], ["ok"]),
    ],
)
def test_list_filters(
    runs: Runs, capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]
) -> None:
    rows = listed(capsys, runs.state, *argv)
    assert [r["run_id"] for r in rows] == [getattr(runs, name) for name in expected]


def test_list_since_an_iso_time_or_date(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    two_days_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2 * DAY))
    assert [r["run_id"] for r in listed(capsys, runs.state, "--since", two_days_ago)] == [
        runs.killed,
        runs.ok,
        runs.failed,
    ]
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + DAY))
    assert listed(capsys, runs.state, "--since", tomorrow) == []


def test_list_plain_when_not_a_terminal(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "runs", "list", "--state-dir", str(runs.state))
    assert code == 0 and err == ""
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].split() == [
        "RUN",
        "WORKFLOW",
        "KEY",
        "STATUS",
        "STARTED",
        "DURATION",
        "ASKED",
        "BY",
    ]
    assert len(lines) == 6
    failed = next(line for line in lines if line.startswith(runs.failed))
    assert failed.split()[1:4] == ["session_reset", CANONICAL, "failed"]
    assert "UNAVAILABLE" in failed and failed.rstrip().endswith("test:failed")
    killed = next(line for line in lines if line.startswith(runs.killed))
    assert " interrupted " in killed and MAIN in killed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is neither a time nor an age"),
        (["--since", "10x"], "or an age such as 45s, 10m, 2h, 3d"),
        (["--status", "done"], "--status 'done': expected one of succeeded, failed, cancelled"),
    ],
)
def test_list_bad_option_is_one_line_and_exit_2(
    runs: Runs, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = cli(capsys, "runs", "list", "--state-dir", str(runs.state), *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and err.startswith("orchestrator: error: ")


def test_no_journal_yet_lists_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert listed(capsys, tmp_path / "nothing-here") == []
    code, out, _ = cli(capsys, "runs", "list", "--state-dir", str(tmp_path / "nothing-here"))
    assert code == 0 and out == ""
    assert not (tmp_path / "nothing-here").exists()  # read-only: nothing created


def test_list_reports_a_torn_tail_and_leaves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    seed_state(state)
    kill_reset(state)
    (jrnl,) = journal_dir(state).glob("*.jrnl")
    before = jrnl.read_bytes() + b"\x07\x00\x00\x00torn"
    jrnl.write_bytes(before)
    code, out, err = cli(capsys, "runs", "list", "--state-dir", str(state), "--json")
    assert code == 0 and len(orjson.loads(out)) == 1
    assert f"{jrnl} has a damaged tail at byte" in err and err.count("\n") == 1
    assert jrnl.read_bytes() == before  # read-only: nothing cut, nothing set aside
    assert not list(journal_dir(state).glob("*.broken"))


# -- runs show -----------------------------------------------------------------------------


def test_show_succeeded_run_says_who_reset_what_and_how(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = shown(capsys, runs.state, runs.ok)
    assert doc["run"]["status"] == "succeeded" and doc["run"]["requested_by"] == "test:ok"
    kinds = [e["kind"] for e in doc["timeline"]]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    steps = [
        (e["step"], e["attempt"], e["outcome"]) for e in doc["timeline"] if e["kind"] == "attempt"
    ]
    assert steps == [
        (s, 1, "ok")
        for s in (
            "hook_fired",
            "runtime_cleanup",
            "acp_cancel",
            "acp_close",
            "store_mutation",
            "archive",
            "unbind",
        )
    ]
    commit = next(
        e for e in doc["timeline"] if e["kind"] == "effect_planned" and e["name"] == "commit"
    )
    assert commit["step"] == "store_mutation"
    assert commit["value"]["new_session_id"] == runs.new_session_id
    assert all(e["duration"] >= 0 for e in doc["timeline"] if e["kind"] == "attempt")


def test_show_failed_run_has_the_forced_timeout_and_the_failure(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = shown(capsys, runs.state, runs.failed)
    (cancel,) = attempts(doc, "acp_cancel")
    assert cancel["outcome"] == "timeout" and cancel["forced"] is True
    end = doc["timeline"][-1]
    assert end["kind"] == "run_finished" and end["status"] == "failed"
    assert (
        end["code"] == "UNAVAILABLE"
        and end["message"] == f"Session {KEY} is still active; try again in a moment."
    )
    assert attempts(doc, "store_mutation") == []  # nothing past the failure ran
    code, out, _ = cli(capsys, "runs", "show", runs.failed, "--state-dir", str(runs.state))
    assert code == 0 and "\x1b" not in out
    assert f"run {runs.failed}: session_reset on {CANONICAL}, failed UNAVAILABLE" in out
    cancel_line = next(line for line in out.splitlines() if "acp_cancel #1" in line)
    assert "timeout (forced)" in cancel_line


def test_show_unknown_run_is_exit_2(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "runs", "show", "0123456789abcdef", "--state-dir", str(runs.state))
    assert code == 2 and out == ""
    assert "no run '0123456789abcdef' in the journal" in err and err.count("\n") == 1
    assert str(journal_dir(runs.state)) in err


def test_show_accepts_a_unique_prefix(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    doc = shown(capsys, runs.state, runs.failed[:-3])
    assert doc["run"]["run_id"] == runs.failed


def test_killed_run_is_interrupted_then_recovered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    seed_state(state)
    kill_reset(state)
    (row,) = listed(capsys, state)
    assert row["status"] == "interrupted" and row["key"] == MAIN
    doc = shown(capsys, state, row["run_id"])
    assert [a["outcome"] for a in attempts(doc, "archive")] == ["interrupted"]
    assert attempts(doc, "archive")[0]["duration"] is None
    assert [e["kind"] for e in doc["timeline"]].count("run_resumed") == 0
    _, out, _ = cli(capsys, "runs", "show", row["run_id"], "--state-dir", str(state))
    assert "archive #1          interrupted" in out
    assert f"finish it with: orchestrator recover --state-dir {state}" in out

    assert main(["recover", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    (row,) = listed(capsys, state)
    assert row["status"] == "succeeded" and row["resumes"] == 1
    doc = shown(capsys, state, row["run_id"])
    assert [a["outcome"] for a in attempts(doc, "archive")] == ["interrupted", "ok"]
    kinds = [e["kind"] for e in doc["timeline"]]
    resumed = kinds.index("run_resumed")
    assert doc["timeline"][resumed]["requested_by"] == "cli:recover"
    archive_attempts = [
        i
        for i, e in enumerate(doc["timeline"])
        if e.get("step") == "archive" and e["kind"] == "attempt"
    ]
    assert archive_attempts[0] < resumed < archive_attempts[1]
    assert doc["timeline"][-1]["status"] == "succeeded"
    commit = next(
        e for e in doc["timeline"] if e["kind"] == "effect_planned" and e["name"] == "commit"
    )
    moves = commit["value"]["archive"]
    assert attempts(doc, "archive")[1]["result"]["archived"] == [dst for _src, dst in moves]


# -- running vs interrupted (the key lock) -------------------------------------------------


@pytest.mark.anyio
async def test_a_run_in_flight_is_running_until_it_ends(tmp_path: Path) -> None:
    release = anyio.Event()
    entered = anyio.Event()

    async def wait(ctx: StepContext) -> str:
        entered.set()
        await release.wait()
        return "done"

    spec = WorkflowSpec(
        "slow",
        [State("wait", wait, timeout=30, on={"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED})],
    )
    directory = tmp_path / "journal"
    async with open_engine(await FileJournal.open(directory)) as engine:
        engine.register(spec)
        handle = engine.start("slow", "k1", requested_by="test")
        await entered.wait()
        reader = await FileJournal.open(directory, repair=False)
        (summary,) = select_runs(reader, reader.key_held)
        assert summary.status == "running"
        view = view_run(find_run(reader, handle.run_id, "here"), reader.key_held)
        assert [e.outcome for e in view.timeline if isinstance(e, Attempt)] == ["running"]
        # The same records with nobody holding the key: a crash left them.
        (summary,) = select_runs(reader, lambda key: False)
        assert summary.status == "interrupted"
        release.set()
        assert (await handle.wait()).ok
    await reader.refresh()
    (summary,) = select_runs(reader, reader.key_held)
    assert summary.status == "succeeded"


@pytest.mark.anyio
async def test_key_held_probe_neither_waits_nor_creates(tmp_path: Path) -> None:
    journal = await FileJournal.open(tmp_path / "journal")
    assert journal.key_held("k") is False
    assert not (tmp_path / "journal").exists()
    async with journal.lock_key("k"):
        assert journal.key_held("k") is True
        assert journal.key_held("other") is False
    assert journal.key_held("k") is False


def test_an_attempt_cut_short_is_interrupted_or_running(runs: Runs) -> None:
    reader = anyio.run(partial(FileJournal.open, journal_dir(runs.state), repair=False))
    history = find_run(reader, runs.killed, "here")

    def archive(entries: list[Entry]) -> list[str]:
        return [e.outcome for e in entries if isinstance(e, Attempt) and e.step == "archive"]

    assert archive(timeline(history)) == ["interrupted"]
    assert archive(timeline(history, running=True)) == ["running"]


# -- what reaches a terminal ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    state = tmp_path_factory.mktemp("hostile")
    return state, anyio.run(hostile_run, state)


def test_escapes_in_keys_and_errors_never_reach_plain_output_raw(
    hostile: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, run_id = hostile
    code, out, _ = cli(capsys, "runs", "list", "--state-dir", str(state))
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert len(out.splitlines()) == 2  # the newline inside the key did not split the row
    assert "evil\\x1b]0;pwned\\x07\\nkey\\u202e" in out and "me\\x1b[2J" in out
    code, out, _ = cli(capsys, "runs", "show", run_id, "--state-dir", str(state))
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert "RuntimeError: disk \\x1b[31mgone\\nreally" in out
    assert 'token = "tok\\u001b[5m\\n"' in out  # planned values are shown as JSON
    applied = next(line for line in out.splitlines() if " applied " in line)
    assert applied.endswith('token = {"minted":"tok\\u001b[5m\\n"}')


def test_escapes_never_reach_a_terminal_raw(
    hostile: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, run_id = hostile
    monkeypatch.setenv("COLUMNS", "240")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    for argv in (["runs", "list"], ["runs", "show", run_id]):
        tty = FakeTTY()
        monkeypatch.setattr(sys, "stdout", tty)
        assert main([*argv, "--state-dir", str(state)]) == 0
        out = tty.getvalue()
        assert "─" in out  # drawn by rich
        for raw in ("\x1b]0;pwned", "\x07", "\x1b[2J", "\x1b[31mgone", "\u202e", "\nkey"):
            assert raw not in out
        assert "\\x1b]0;pwned" in out


def test_json_output_is_lossless_for_hostile_text(
    hostile: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, run_id = hostile
    (row,) = listed(capsys, state)
    assert row["key"] == EVIL_KEY and row["requested_by"] == EVIL_CALLER
    doc = shown(capsys, state, run_id)
    (boom,) = attempts(doc, "boom")
    assert boom["error"] == {"type": "RuntimeError", "message": EVIL_ERROR}
    assert doc["run"]["message"] == EVIL_ERROR


@pytest.mark.parametrize(
    ("text", "shown_as"),
    [
        ("plain key", "plain key"),
        ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("\x9b31m", "\\x9b31m"),
        ("rtl\u202eevil\u2028", "rtl\\u202eevil\\u2028"),
        ("ünïcödé ✓", "ünïcödé ✓"),
    ],
)
def test_printable(text: str, shown_as: str) -> None:
    assert printable(text) == shown_as


# -- --since -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", 1_000_000.0 - 45),
        ("10m", 1_000_000.0 - 600),
        ("2h", 1_000_000.0 - 7200),
        ("3d", 1_000_000.0 - 3 * DAY),
        ("1w", 1_000_000.0 - 7 * DAY),
        ("1.5h", 1_000_000.0 - 5400),
        ("2026-11-25T10:00:00Z", 1_795_600_800.0),
        ("2026-11-25T10:00:00+01:00", 1_795_597_200.0),
        ("2026-11-25T10:00:00", 1_795_600_800.0),
        ("2026-11-25", 1_795_564_800.0),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, now=1_000_000.0) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "10", "-2h", "2026-13-01", "h2"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="neither a time nor an age"):
        parse_since(text, now=0.0)
