"""Diagrams come from the decision table, show a run's path, and stay fresh in diagrams/."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator import Engine, MemoryJournal, RunHistory, StepContext
from orchestrator._cli_diagram import _sync_dir, expected_diagrams
from orchestrator._diagrams import dot, edges, mermaid, run_path, svg, svg_source_hash
from orchestrator._machine import DecisionTable
from orchestrator.cli import main
from orchestrator.testing import CountingIds, FakeClock
from tests.flows import LEDGER, Effects, make_ledger
from workflows.session_delete import SESSION_DELETE
from workflows.session_reset import SESSION_RESET

ROOT = Path(__file__).resolve().parents[2]
MERMAID_TOOL = ROOT / "tests" / "mermaid"


async def _ledger_run(
    tmp_path: Path, input: Any = None, *, step_timeout: float = 10.0
) -> RunHistory:
    engine = Engine(MemoryJournal(), clock=FakeClock(), ids=CountingIds())
    engine.register(make_ledger(step_timeout), Effects(tmp_path / "fx"))
    result = await engine.run("ledger", "k", input)
    history = engine.journal.history(result.run_id)
    assert history is not None
    return history


def test_edges_are_the_machines_transitions_in_step_order() -> None:
    found = edges(DecisionTable(SESSION_RESET))
    sources = list(dict.fromkeys(e.src for e in found))
    assert sources == [s.name for s in SESSION_RESET.states]
    assert ("store_mutation", "failed:UNAVAILABLE") in {(e.src, e.dest) for e in found}
    loops = [e for e in found if e.src == e.dest]
    assert {(e.src, e.retry) for e in loops} == {
        ("store_mutation", 2),
        ("archive", 3),
        ("unbind", 3),
    }
    # Every (state, outcome) appears on exactly one non-loop edge.
    pairs = [(e.src, o.split(" ")[0]) for e in found if e.src != e.dest for o in e.outcomes]
    assert sorted(pairs) == sorted(
        (s.name, o) for s in SESSION_RESET.states for o in ("ok", "timeout", "error")
    )


def test_mermaid_marks_start_terminals_and_failure_codes() -> None:
    text = mermaid(SESSION_DELETE)
    assert text.startswith("---\ntitle: session_delete\n---\nflowchart LR\n")
    assert "start(( )) --> runtime_cleanup" in text
    assert 'failed_UNAVAILABLE(["failed: UNAVAILABLE"])' in text
    assert "class succeeded success" in text and "class failed_UNAVAILABLE failure" in text
    assert 'runtime_cleanup -->|"timeout, error"| failed_UNAVAILABLE' in text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_run_path_of_a_retried_then_succeeded_run(tmp_path: Path) -> None:
    history = await _ledger_run(tmp_path, {"charge_failures": 2})
    path = run_path(history, DecisionTable(LEDGER))
    assert path.status == "succeeded" and not path.interrupted
    steps = [(t.number, t.edge.src, t.edge.dest, t.outcome, t.attempt) for t in path.traversals]
    assert steps == [
        (1, "reserve", "charge", "ok", 1),
        (2, "charge", "charge", "error", 1),
        (3, "charge", "charge", "error", 2),
        (4, "charge", "notify", "ok", 3),
        (5, "notify", "audit", "ok", 1),
        (6, "audit", "succeeded", "ok", 1),
    ]
    text = mermaid(LEDGER, path)
    assert '"2. error, attempt 1, 0.0 ms<br>3. error, attempt 2, 0.0 ms"| charge' in text
    # Taken edges coloured by their outcome, untaken ones faded.
    assert re.search(r"linkStyle \d+ stroke:#c62828,stroke-width:3px", text)
    assert re.search(r"linkStyle \d+ stroke:#c8c8c8", text)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_run_path_of_a_failed_run_marks_the_failing_step(tmp_path: Path) -> None:
    history = await _ledger_run(tmp_path, {"reserve_hang": True}, step_timeout=0.01)
    path = run_path(history, DecisionTable(LEDGER))
    assert (path.status, path.last_state) == ("failed", "reserve")
    assert path.traversals[-1].edge.dest == "failed:UNAVAILABLE"
    assert "class reserve failure" in mermaid(LEDGER, path)
    assert '"reserve" [label="reserve", fillcolor="#ffebee"' in dot(LEDGER, path)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_run_path_of_an_interrupted_then_resumed_run(tmp_path: Path) -> None:
    full = await _ledger_run(tmp_path)
    cut = next(i for i, r in enumerate(full.records) if getattr(r, "step", None) == "notify")
    journal = MemoryJournal()
    for record in full.records[: cut + 1]:  # killed after notify started
        await journal.append(record)
    stopped = run_path(journal.history(full.run_id), DecisionTable(LEDGER))  # type: ignore[arg-type]
    assert stopped.status is None and stopped.last_state == "notify"
    assert stopped.interrupted == [("notify", 1)]
    assert "stopped[/" in mermaid(LEDGER, stopped) and "class notify interrupted" in mermaid(
        LEDGER, stopped
    )
    engine = Engine(journal, clock=FakeClock())
    engine.register(LEDGER, Effects(tmp_path / "fx2"))
    await engine.recover()
    resumed = run_path(journal.history(full.run_id), DecisionTable(LEDGER))  # type: ignore[arg-type]
    assert resumed.status == "succeeded" and resumed.interrupted == [("notify", 1)]
    assert [t.attempt for t in resumed.traversals if t.edge.src == "notify"] == [2]
    assert "stopped[/" not in mermaid(LEDGER, resumed)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_run_path_of_a_cancelled_run() -> None:
    from orchestrator import SUCCEED, State, WorkflowSpec, open_engine

    entered = anyio.Event()

    async def wait(ctx: StepContext) -> None:
        entered.set()
        await anyio.sleep_forever()

    spec = WorkflowSpec(
        "w", [State("a", wait, 9, {"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED})]
    )
    journal = MemoryJournal()
    async with open_engine(journal, ids=CountingIds()) as engine:
        engine.register(spec)
        handle = engine.start("w", "k")
        await entered.wait()
        handle.cancel()
        await handle.wait()
    path = run_path(journal.history(handle.run_id), DecisionTable(spec))  # type: ignore[arg-type]
    assert (path.status, path.last_state, path.traversals) == ("cancelled", "a", [])


def test_committed_diagrams_are_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagram", "--check", "--dir", str(ROOT / "diagrams")]) == 0, capsys.readouterr()


def test_check_fails_after_a_workflow_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "diagrams", tmp_path / "d")
    assert anyio.run(functools.partial(_sync_dir, tmp_path / "d", update=False)) == 0

    import orchestrator._cli_diagram as module
    from workflows.session_reset import make_session_reset
    from workflows.sessions.plugin import plugin

    class Edited:
        def specs(self) -> list[Any]:
            edited = make_session_reset()
            states = list(edited.states)
            # An edit: the hook's errors now fail the reset.
            from dataclasses import replace

            from orchestrator import fail

            states[0] = replace(states[0], on={**states[0].on, "error": fail("HOOK", "x")})
            return [type(edited)("session_reset", states), SESSION_DELETE]

        def deps(self, state_dir: Path) -> None:
            return None

        def commands(self) -> list[Any]:
            return []

        def diagram_examples(self) -> Any:
            return plugin.diagram_examples()

    monkeypatch.setattr(module, "load_plugins", lambda: [Edited()])
    assert anyio.run(functools.partial(_sync_dir, tmp_path / "d", update=False)) == 1


def test_diagram_command_writes_mermaid_and_refuses_unknown_workflows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.mmd"
    assert main(["diagram", "session_reset", "-o", str(out)]) == 0
    assert out.read_text() == mermaid(SESSION_RESET)
    assert main(["diagram", "nope"]) == 2
    assert "unknown workflow 'nope'" in capsys.readouterr().err


def test_run_path_from_a_state_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "reset",
                "main",
                "--inject",
                "acp_close=timeout",
                "--json",
                "--state-dir",
                str(tmp_path),
            ]
        )
        == 1
    )
    import orjson

    run_id = orjson.loads(capsys.readouterr().out)["run_id"]
    assert main(["diagram", "--run", run_id, "--state-dir", str(tmp_path), "--format", "dot"]) == 0
    text = capsys.readouterr().out
    assert "timeout, attempt 1, " in text and "forced" in text
    assert main(["diagram", "--run", "nope", "--state-dir", str(tmp_path)]) == 2


needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz 'dot' is not installed (apt-get install graphviz; .ci/run installs it)",
)


@needs_dot
def test_svg_renders_and_carries_the_source_hash() -> None:
    source = dot(SESSION_RESET)
    text = svg(source)
    assert "<svg" in text and "failed: UNAVAILABLE" in text
    from orchestrator._diagrams import source_hash

    assert svg_source_hash(text) == source_hash(source)


def test_svg_without_graphviz_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator._diagrams as module
    from orchestrator.errors import UsageError

    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    monkeypatch.setitem(__import__("sys").modules, "pygraphviz", None)
    with pytest.raises(UsageError, match="apt-get install graphviz"):
        svg(dot(SESSION_RESET))


def _mermaid_parser() -> list[str] | None:
    node = shutil.which("node")
    if node is None or not (MERMAID_TOOL / "node_modules" / "mermaid").is_dir():
        return None
    return [node, str(MERMAID_TOOL / "parse.mjs")]


@pytest.mark.skipif(
    _mermaid_parser() is None,
    reason="the real Mermaid parser is not installed: run 'npm ci --prefix tests/mermaid' "
    "(.ci/run does)",
)
def test_every_generated_mermaid_parses_with_the_real_parser(tmp_path: Path) -> None:
    expected = anyio.run(expected_diagrams)
    files = []
    for stem, (text, _) in expected.items():
        files.append(tmp_path / f"{stem}.mmd")
        files[-1].write_text(text)
    for stem, history in {
        "ledger": anyio.run(_ledger_run, tmp_path, {"charge_failures": 1})
    }.items():
        files.append(tmp_path / f"{stem}.run.mmd")
        files[-1].write_text(mermaid(LEDGER, run_path(history, DecisionTable(LEDGER))))
    command = _mermaid_parser()
    assert command is not None
    done = subprocess.run(
        [*command, *map(str, files)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == len(files)


def test_mermaid_lines_follow_a_strict_grammar() -> None:
    """Without Node, a strict line grammar of the subset we write catches syntax slips."""
    grammar = [
        r"---",
        r"title: [\w. -]+",
        r"flowchart LR",
        r"    start\(\( \)\) --> \w+",
        r'    \w+\["\w+"\]',
        r'    \w+\(\["[\w: ]+"\]\)',
        r'    \w+ -->\|"[^"|]+"\| \w+',
        r"    classDef \w+ [\w:#,.\- ]+",
        r"    class \w+ \w+",
        r"    linkStyle \d+ [\w:#,\-]+",
        r'    stopped\[/"[^"]+"/\]',
        r"    \w+ -\.- stopped",
    ]
    pattern = re.compile("|".join(f"(?:{g})" for g in grammar))
    texts = [text for text, _ in anyio.run(expected_diagrams).values()]
    for text in texts:
        for line in text.splitlines():
            assert pattern.fullmatch(line), line
