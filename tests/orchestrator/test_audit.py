"""``audit export``: lossless JSON Lines of real runs; and the progress bar stays off pipes."""

from __future__ import annotations

import io
import os
import stat
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import orjson
import pytest

from orchestrator import FileJournal, Record
from orchestrator._audit import TAG_FIELD, decode_line, encode_record, read_export
from orchestrator._progress import progress
from orchestrator.cli import journal_dir, main
from orchestrator.errors import UsageError
from tests.orchestrator.test_views import FakeTTY, Runs, hostile_run, make_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Old runs, a run killed mid-archive and then recovered, a success, a failure, and a
    run with an error record, planned and applied effects and hostile text."""
    found = make_runs(tmp_path_factory.mktemp("audit") / "state")
    assert main(["recover", "--state-dir", str(found.state)]) == 0
    anyio.run(hostile_run, found.state)
    return found


def journal_records(state: Path) -> list[Record]:
    """The journal's records, runs in start order (ties: run id), each run by seq."""
    journal = anyio.run(partial(FileJournal.open, journal_dir(state), repair=False))
    histories = sorted(journal.runs(), key=lambda h: (h.records[0].at, h.run_id))
    return [record for history in histories for record in history.records]


def export(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, bytes, str]:
    code = main(["audit", "export", *argv])
    out, err = capsys.readouterr()
    return code, out.encode(), err


def test_export_reads_back_as_the_same_records(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "audit.jsonl"
    code, out, err = export(capsys, "--state-dir", str(runs.state), "-o", str(target))
    assert code == 0 and out == b""
    expected = journal_records(runs.state)
    assert read_export(target) == expected
    assert f"exported {len(expected)} records of 6 runs to {target}" in err
    kinds = {type(r).__struct_config__.tag for r in expected}
    assert kinds == {
        "run_started",
        "run_resumed",
        "step_started",
        "step_finished",
        "effect_planned",
        "effect_applied",
        "run_finished",
    }
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_export_to_stdout_is_the_same_bytes(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = export(capsys, "--state-dir", str(runs.state))
    assert code == 0 and err == ""  # no progress bar, no note: stderr is not a terminal
    target = tmp_path / "audit.jsonl"
    assert export(capsys, "--state-dir", str(runs.state), "-o", str(target))[0] == 0
    assert out == target.read_bytes()
    assert [decode_line(line) for line in out.splitlines()] == journal_records(runs.state)


def test_every_line_has_the_tag_then_every_field_of_its_record(runs: Runs) -> None:
    for record in journal_records(runs.state):
        line: dict[str, Any] = orjson.loads(encode_record(record))
        fields = list(line)
        assert fields[:4] == [TAG_FIELD, "run_id", "seq", "at"]
        assert set(fields) == {TAG_FIELD, *record.__struct_fields__}
        assert line[TAG_FIELD] == type(record).__struct_config__.tag


def test_export_since_keeps_whole_runs(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = export(capsys, "--state-dir", str(runs.state), "--since", "1d")
    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    run_ids = list(dict.fromkeys(line["run_id"] for line in lines))
    assert runs.old not in run_ids and runs.old_failed not in run_ids
    assert run_ids[:3] == [runs.killed, runs.ok, runs.failed]
    firsts = [line for line in lines if line["seq"] == 0]
    assert [line["run_id"] for line in firsts] == run_ids
    assert all(line[TAG_FIELD] == "run_started" for line in firsts)


def test_export_of_no_journal_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export(capsys, "--state-dir", str(tmp_path / "none")) == (0, b"", "")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "soon"], "--since 'soon' is neither a time nor an age"),
        (["-o", "{missing}/x/audit.jsonl"], "cannot write the export to"),
    ],
)
def test_export_bad_option_is_exit_2(
    runs: Runs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    argv = [a.replace("{missing}", str(tmp_path / "missing")) for a in argv]
    code, out, err = export(capsys, "--state-dir", str(runs.state), *argv)
    assert code == 2 and out == b""
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "missing").exists()


def test_read_export_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = encode_record(
        msgspec.convert(
            {"record": "run_resumed", "run_id": "r", "seq": 1, "at": 1.0, "fingerprint": "f"},
            Record,
        )
    )
    path.write_bytes(good + b'{"record": "nope"}\n')
    with pytest.raises(UsageError, match=r"bad\.jsonl line 2 is not an audit record"):
        read_export(path)


# -- progress ------------------------------------------------------------------------------


def test_progress_draws_on_a_terminal() -> None:
    tty = FakeTTY()
    with progress(3, "exporting runs", stream=tty) as advance:
        for _ in range(3):
            advance()
    assert "exporting runs" in tty.getvalue()


@pytest.mark.parametrize(
    ("stream", "options"),
    [
        (io.StringIO(), {}),  # piped or redirected
        (FakeTTY(), {"enabled": False}),  # --json
        (FakeTTY(), {"min_total": 4}),  # too little work for a bar
    ],
)
def test_progress_stays_quiet(stream: io.StringIO, options: dict[str, Any]) -> None:
    with progress(3, "exporting runs", stream=stream, **options) as advance:
        advance()
        advance(2)
    assert stream.getvalue() == ""


def test_commands_draw_progress_only_on_a_terminal_and_not_with_json(
    runs: Runs, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("orchestrator._cli_views.PROGRESS_MIN", 0)
    state = str(runs.state)
    assert main(["runs", "list", "--state-dir", state]) == 0
    assert main(["audit", "export", "--state-dir", state]) == 0
    assert capsys.readouterr().err == ""  # stderr is not a terminal
    for argv, drawn in (
        (["runs", "list", "--json"], False),
        (["runs", "list"], True),
        (["audit", "export"], True),
    ):
        tty = FakeTTY()
        monkeypatch.setattr("sys.stderr", tty)
        assert main([*argv, "--state-dir", state]) == 0
        assert (tty.getvalue() != "") is drawn, argv
