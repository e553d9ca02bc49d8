"""The example's entry point: its workflow, its host, and the ``demo`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from orchestrator import ENV_CRASH_AT, Command, Engine, WorkflowSpec
from orchestrator.cli import add_common_options, open_state_engine, print_history, print_run

from .spec import PUBLISH_NOTE, NoteHost

__all__ = ("plugin",)


class ExamplePlugin:
    def specs(self) -> Sequence[WorkflowSpec]:
        return [PUBLISH_NOTE]

    def deps(self, state_dir: Path) -> NoteHost:
        return NoteHost(state_dir / "example")

    def commands(self) -> Sequence[Command]:
        return [
            Command(
                "demo",
                "run the example workflow: success, failure, crash and recovery",
                add_common_options,
                _demo,
                description="Publish three notes with the example workflow in --state-dir: "
                "one that succeeds after a retry, one whose write is forced to time out "
                "(fails UNAVAILABLE), and one killed mid-run and then recovered. Prints "
                "each run's journal.",
            )
        ]


async def _demo(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    print(f"state directory: {state_dir}")
    async with open_state_engine(state_dir) as engine:
        flaky = NoteHost(state_dir / "example")
        flaky.flaky_notify = True
        engine.register(PUBLISH_NOTE, flaky)
        print("\n1. publish a note (the first notice attempt fails, a retry succeeds)")
        first = await engine.run("publish_note", "demo-ok", {"text": "hello"}, requested_by="demo")
        print_run(first)
        _show(engine, first.run_id)
        print("\n2. publish with the write forced to time out (--inject write_note=timeout)")
        second = await engine.run(
            "publish_note",
            "demo-fail",
            {"text": "never written"},
            requested_by="demo",
            force={"write_note": "timeout"},
        )
        print_run(second)
        _show(engine, second.run_id)
    print("\n3. publish in a child process killed right after the note is written")
    child = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            "publish_note",
            "demo-crash",
            "--input",
            '{"text": "survives a crash"}',
            "--state-dir",
            str(state_dir),
        ],
        env={**os.environ, ENV_CRASH_AT: "write_note.finished"},
        check=False,
    )
    print(f"   the child process ended with exit status {child.returncode} (-9: SIGKILL)")
    async with open_state_engine(state_dir) as engine:
        report = await engine.recover(requested_by="demo:recover")
        for result in report.resumed:
            print("   recovered: ", end="")
            print_run(result)
            _show(engine, result.run_id)
    notes = sorted((state_dir / "example" / "notes").glob("*.txt"))
    print(f"\nnotes written: {len(notes)}, in {state_dir / 'example' / 'notes'}")
    print(f"journal: {state_dir / 'orchestrator' / 'journal'}")
    print(
        f'try: orchestrator run publish_note mine --input \'{{"text": "hi"}}\' '
        f"--state-dir {state_dir}"
    )
    return 0


def _show(engine: Engine, run_id: str) -> None:
    history = engine.journal.history(run_id)
    if history is not None:
        print_history(history.records)


plugin = ExamplePlugin()
