"""The command line: exit codes, one-line errors, ``--json`` documents, ``--help``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from orchestrator._journal.framing import _HEADER, _HEADER_CRC, FORMAT_VERSION, MAGIC
from orchestrator.cli import main, parse_injections
from orchestrator.errors import JournalUnavailable, UsageError

ROOT = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_reset_json_success_prints_one_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "reset", "main", "--state-dir", str(tmp_path), "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["ok"] is True and doc["key"] == "agent:main:main" and doc["run_id"]
    assert doc["entry"]["totalTokensFresh"] is True


def test_failed_run_exits_1_with_code_and_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "reset",
        "main",
        "--inject",
        "acp_cancel=timeout",
        "--state-dir",
        str(tmp_path),
        "--json",
    )
    doc = orjson.loads(out)
    assert code == 1
    assert doc["ok"] is False and doc["run_id"]
    assert doc["error"] == {
        "code": "UNAVAILABLE",
        "message": "Session main is still active; try again in a moment.",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "nope", "k"],
            "unknown workflow 'nope'; registered workflows: session_delete, session_reset",
        ),
        (["reset", "main", "--inject", "acp_cancel"], "expected STEP=OUTCOME"),
        (["reset", "main", "--inject", "zzz=ok"], "has no state 'zzz'"),
        (["run", "session_reset", "k", "--input", "{oops"], "--input is not valid JSON"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _run(capsys, *argv, "--state-dir", str(tmp_path))
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("orchestrator: error: ")
    assert "Traceback" not in err and out == ""


def test_unwritable_state_dir_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = _run(
        capsys,
        "run",
        "publish_note",
        "k",
        "--input",
        '{"text": "x"}',
        "--state-dir",
        str(blocker / "state"),
    )
    assert code == 2
    assert "unavailable" in err and str(blocker) in err and err.count("\n") == 1


def test_journal_of_another_format_version_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import zlib

    journal = tmp_path / "orchestrator" / "journal"
    journal.mkdir(parents=True)
    body = _HEADER.pack(MAGIC, FORMAT_VERSION + 1, 0, b"s" * 16)
    (journal / "old.jrnl").write_bytes(body + _HEADER_CRC.pack(zlib.crc32(body)))
    code, _, err = _run(capsys, "recover", "--state-dir", str(tmp_path))
    assert code == 3
    assert f"format version {FORMAT_VERSION + 1}" in err and "old.jrnl" in err


def test_recover_with_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "recover", "--state-dir", str(tmp_path), "--json")
    assert code == 0
    assert orjson.loads(out) == {"resumed": [], "refused": [], "skipped": []}


def test_workflows_lists_names_and_fingerprints(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "workflows", "--json")
    rows = orjson.loads(out)
    assert code == 0
    assert [r["name"] for r in rows] == ["session_reset", "session_delete"]
    assert all(len(r["fingerprint"]) == 16 for r in rows)


def test_parse_injections() -> None:
    assert parse_injections(["a=ok", "b=timeout"]) == {"a": "ok", "b": "timeout"}
    with pytest.raises(UsageError, match="OUTCOME one of ok, timeout, error"):
        parse_injections(["a=later"])


def test_console_script_and_module_both_explain_themselves() -> None:
    for argv in (["orchestrator", "--help"], [sys.executable, "-m", "orchestrator", "--help"]):
        exe = argv[0] if argv[0] != "orchestrator" else str(Path(sys.executable).parent / argv[0])
        done = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            env={**os.environ},
        )
        assert done.returncode == 0, done.stderr
        for command in ("run", "recover", "demo", "workflows", "reset", "delete"):
            assert command in done.stdout


def test_demo_shows_reset_delete_failure_and_recovery(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo", "--state-dir", str(tmp_path / "st")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1. reset 'main'" in out and "ok: agent:main:main" in out
    assert "deleted=True" in out and ".deleted." in out
    assert "failed: UNAVAILABLE" in out and "store unchanged" in out
    assert "child ended with status -9" in out and "succeeded" in out
    # A second demo on its own directory starts over instead of refusing.
    again = subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo", "--state-dir", str(tmp_path / "st")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr


def test_demo_refuses_a_directory_it_did_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    code, _, err = _run(capsys, "demo", "--state-dir", str(tmp_path))
    assert code == 2 and "not a demo directory" in err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_an_error_of_ours_wrapped_in_task_groups_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's failing journal reaches main() inside two task groups' exception groups:
    still one line and the error's own exit code, no traceback."""
    failed = JournalUnavailable("postgresql://db:5432/test", "server closed the connection")

    async def failing(args: object) -> int:
        raise ExceptionGroup("worker", [ExceptionGroup("serve", [failed])])

    monkeypatch.setattr("orchestrator.cli._cmd_workflows", failing)
    code, _out, err = _run(capsys, "workflows")
    assert code == failed.exit_code == 2
    assert err.strip().splitlines() == [f"orchestrator: error: {failed}"]

    async def two(args: object) -> int:
        raise ExceptionGroup("two", [failed, ValueError("a bug")])

    monkeypatch.setattr("orchestrator.cli._cmd_workflows", two)
    with pytest.raises(ExceptionGroup):
        main(["workflows"])
