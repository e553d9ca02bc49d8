"""The always-on ordering checker (``tests/ordering.py``) catches each kind of misordering.

Each test drives an ``OrderingChecker`` of its own, on the real disk, with a sequence of
file operations like the journal's and an effect's: the correct order records nothing, and
each step taken out of order is recorded, naming the operation and what was not durable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import (
    EffectApplied,
    EffectPlanned,
    FileOps,
    RunFinished,
    StepFinished,
    set_file_ops,
)
from orchestrator._fs import atomic_write, file_ops, layer_file_ops
from orchestrator._journal.framing import encode_frame, make_header

from ..ordering import ENV_LOG, OrderingChecker
from .faults import FaultyOps

SALT = b"\x00" * 8
PLAN = encode_frame(EffectPlanned(run_id="r", seq=1, at=0.0, step="s", name="new_id"), SALT)
DONE = encode_frame(EffectApplied(run_id="r", seq=2, at=0.0, step="s", name="commit"), SALT)
#: Completion records: an effect's own, and a step's or a run's outcome (what the workflows
#: record after their effects).
COMPLETIONS = {
    "effect_applied 'commit'": DONE,
    "step_finished 'store_mutation'": encode_frame(
        StepFinished(
            run_id="r", seq=2, at=0.0, step="store_mutation", attempt=1, outcome="ok", duration=0
        ),
        SALT,
    ),
}
#: Records that claim no effect is done: a failed attempt, and a run's end (a run may
#: succeed past a step that failed every attempt).
NOT_COMPLETIONS = {
    "a failed attempt": encode_frame(
        StepFinished(
            run_id="r", seq=2, at=0.0, step="unbind", attempt=1, outcome="error", duration=0
        ),
        SALT,
    ),
    "a run's end": encode_frame(
        RunFinished(run_id="r", seq=3, at=0.0, status="succeeded", step="unbind"), SALT
    ),
}
NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL


class World:
    """A journal directory and a state directory, with a checker watching both."""

    def __init__(self, root: Path) -> None:
        self.checker = OrderingChecker()
        self.journal_dir = root / "journal"
        self.state = root / "state"
        for directory in (self.journal_dir, self.state):
            directory.mkdir()
        (self.state / "store.json").write_bytes(b"{}")
        (self.state / "old.jsonl").write_bytes(b"old\n")
        self.fd = self.create_journal()

    def create_journal(self, *, sync_name: bool = True) -> int:
        """A journal file made the way ``FileJournal`` makes one: temp, header, fsync,
        replace, fsync of the directory."""
        ops = self.checker
        temp = self.journal_dir / ".a.jrnl.tmp"
        fd = ops.open(temp, NEW | os.O_APPEND)
        ops.write(fd, make_header()[0])
        ops.fsync(fd)
        ops.replace(temp, self.journal_dir / "a.jrnl")
        if sync_name:
            ops.fsync_dir(self.journal_dir)
        return fd

    def record(self, frame: bytes, *, sync: bool = True) -> None:
        self.checker.write(self.fd, frame)
        if sync:
            self.checker.fsync(self.fd)

    def store_write(self, *, sync_file: bool = True, sync_dir: bool = True) -> None:
        """The store replaced atomically (or with a sync left out)."""
        ops = self.checker
        temp = self.state / ".store.json.0.tmp"
        fd = ops.open(temp, NEW)
        ops.write(fd, b'{"k": 1}')
        if sync_file:
            ops.fsync(fd)
        ops.close(fd)
        ops.replace(temp, self.state / "store.json")
        if sync_dir:
            ops.fsync_dir(self.state)


def test_the_correct_order_records_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.record(PLAN)
    world.store_write()
    for completion in COMPLETIONS.values():
        world.record(completion)
    ops = world.checker
    ops.link(world.state / "old.jsonl", world.state / "old.jsonl.reset")  # an archive move
    ops.unlink(world.state / "old.jsonl")
    ops.fsync_dir(world.state)
    world.record(DONE)
    assert world.checker.violations == []


#: An effect on the state, each started from a fresh world (the plan written, not synced).
EFFECTS: dict[str, Callable[[FileOps, Path], None]] = {
    "create": lambda ops, state: ops.close(ops.open(state / "new.jsonl", NEW)),
    "write": lambda ops, state: ops.write(ops.open(state / "old.jsonl", os.O_WRONLY), b"x"),
    "truncate": lambda ops, state: ops.truncate(ops.open(state / "old.jsonl", os.O_RDWR), 0),
    "replace": lambda ops, state: ops.replace(state / "old.jsonl", state / "store.json"),
    "link": lambda ops, state: ops.link(state / "old.jsonl", state / "old.jsonl.reset"),
    "unlink": lambda ops, state: ops.unlink(state / "old.jsonl"),
}


@pytest.mark.parametrize("op", EFFECTS)
def test_an_effect_before_its_plan_is_fsynced(tmp_path: Path, op: str) -> None:
    world = World(tmp_path)
    world.record(PLAN, sync=False)
    EFFECTS[op](world.checker, world.state)
    assert len(world.checker.violations) == 1
    violation = world.checker.violations[0]
    assert violation.startswith(f"{op} {world.state}")
    assert "effect_planned record is not durable" in violation
    assert f"{world.journal_dir / 'a.jrnl'} (plan 'new_id') (written, not fsynced)" in violation


@pytest.mark.parametrize("op", EFFECTS)
def test_an_effect_after_its_plan_is_fsynced(tmp_path: Path, op: str) -> None:
    world = World(tmp_path)
    world.record(PLAN)
    EFFECTS[op](world.checker, world.state)
    assert world.checker.violations == []


def test_a_plan_in_a_journal_file_whose_name_is_not_durable(tmp_path: Path) -> None:
    """The plan's bytes are fsynced, but the journal file's name never was."""
    world = World(tmp_path)
    world.checker.close(world.fd)
    os.unlink(world.journal_dir / "a.jrnl")
    world.fd = world.create_journal(sync_name=False)
    world.record(PLAN)
    world.store_write()
    violations = world.checker.violations
    assert [v.split(" ")[0] for v in violations] == ["create", "write", "replace"]
    assert all("a.jrnl's name (not fsynced into its directory)" in v for v in violations)
    world.checker.fsync_dir(world.journal_dir)
    world.store_write()
    assert len(world.checker.violations) == 3  # the name is durable now


def test_store_locks_are_no_effects(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.record(PLAN, sync=False)
    ops = world.checker
    temp = world.state / ".store.json.lock.0.tmp"
    ops.close(ops.open(temp, NEW))
    ops.link(temp, world.state / "store.json.lock")
    ops.unlink(temp)
    ops.unlink(world.state / "store.json.lock")
    assert world.checker.violations == []


@pytest.mark.parametrize("completion", COMPLETIONS)
def test_a_completion_record_before_the_effects_file_fsync(tmp_path: Path, completion: str) -> None:
    world = World(tmp_path)
    world.record(PLAN)
    world.store_write(sync_file=False)
    world.record(COMPLETIONS[completion])
    [violation] = world.checker.violations
    assert violation.startswith(f"{completion} written to {world.journal_dir}")
    assert f"{world.state}/.store.json.0.tmp: bytes written, not fsynced" in violation


@pytest.mark.parametrize("record", NOT_COMPLETIONS)
def test_records_that_claim_nothing_may_precede_the_effects_fsync(
    tmp_path: Path, record: str
) -> None:
    world = World(tmp_path)
    world.record(PLAN)
    world.store_write(sync_file=False, sync_dir=False)
    world.record(NOT_COMPLETIONS[record])
    assert world.checker.violations == []
    world.record(DONE)  # the same unsynced store, now claimed done
    assert len(world.checker.violations) == 1


def test_a_completion_record_before_the_effects_directory_fsync(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.record(PLAN)
    world.store_write(sync_dir=False)
    world.record(DONE)
    [violation] = world.checker.violations
    assert f"{world.state}/store.json: replaced, directory not fsynced" in violation


@pytest.mark.parametrize("op", ["create", "link", "unlink", "mkdir"])
def test_a_completion_record_before_a_name_is_fsynced(tmp_path: Path, op: str) -> None:
    world = World(tmp_path)
    ops, state = world.checker, world.state
    if op == "create":
        fd = ops.open(state / "new.jsonl", NEW)
        ops.fsync(fd)
        ops.close(fd)
    elif op == "link":
        ops.link(state / "old.jsonl", state / "old.jsonl.reset")
    elif op == "unlink":
        ops.unlink(state / "old.jsonl")
    else:
        ops.mkdir(state / "archive")
    world.record(DONE)
    assert len(world.checker.violations) == 1
    assert "directory not fsynced" in world.checker.violations[0]
    ops.fsync_dir(state)
    world.record(DONE)
    assert len(world.checker.violations) == 1


def test_a_temp_file_made_and_removed_between_syncs_is_no_change(tmp_path: Path) -> None:
    world = World(tmp_path)
    ops = world.checker
    temp = world.state / ".x.tmp"
    fd = ops.open(temp, NEW)
    ops.write(fd, b"half")
    ops.close(fd)
    ops.unlink(temp)
    world.record(DONE)
    assert world.checker.violations == []


def test_a_write_racing_an_fsync_stays_unsynced(tmp_path: Path) -> None:
    """An fsync covers what was written before it started: a write made while it runs (a
    threaded fsync) is still not durable after it."""

    world = World(tmp_path)
    checker = world.checker
    fd = checker.open(world.state / "new.jsonl", NEW)

    class WriteDuringFsync(FileOps):
        def fsync(self, fd_: int) -> None:
            checker.inner = FileOps()
            checker.write(fd, b"late")
            super().fsync(fd_)

    checker.write(fd, b"early")
    checker.inner = WriteDuringFsync()
    checker.fsync(fd)
    checker.fsync_dir(world.state)
    world.record(DONE)
    [violation] = checker.violations
    assert "new.jsonl: bytes written, not fsynced" in violation


def test_the_layer_stays_around_whatever_a_test_installs(tmp_path: Path) -> None:
    """The checker sees the operations, and the installed ops still do them; installing
    other ops (a simulated restart) starts the durability tracking afresh."""
    checker = OrderingChecker(file_ops())
    counting = FaultyOps(None, 5, sync=False)
    layer_file_ops(checker.around)
    try:
        previous = set_file_ops(counting)
        try:
            assert file_ops() is checker
            fd = file_ops().open(tmp_path / "a.jrnl", NEW)
            file_ops().write(fd, PLAN)
            atomic_write(tmp_path / "store.json", b"{}")
            file_ops().close(fd)
        finally:
            set_file_ops(previous)
        assert checker.inner is previous
        assert counting.by_op["write"] == 2 and counting.by_op["replace"] == 1
        # The store's temp made, written and put in place before the plan's fsync.
        assert [v.split(" ")[0] for v in checker.violations] == ["create", "write", "replace"]
        atomic_write(tmp_path / "other.json", b"{}")  # the unsynced plan was "before"
        assert len(checker.violations) == 3
    finally:
        layer_file_ops(None)
    assert file_ops() is previous


def test_the_fixture_checks_every_test(ordering_checker: OrderingChecker, tmp_path: Path) -> None:
    """This very test runs under the suite's checker, which sees this misordering too (and
    is then told it was meant)."""
    fd = file_ops().open(tmp_path / "a.jrnl", NEW)
    file_ops().write(fd, PLAN)
    file_ops().close(fd)
    atomic_write(tmp_path / "store.json", b"{}")
    assert ordering_checker.violations
    assert all("effect_planned record is not durable" in v for v in ordering_checker.violations)
    ordering_checker.violations.clear()


MISORDERING_CHILD = """
import os, sys
from pathlib import Path
from orchestrator import EffectPlanned
from orchestrator._fs import atomic_write, file_ops
from orchestrator._journal.framing import encode_frame
where = Path(sys.argv[1])
fd = file_ops().open(where / "a.jrnl", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
plan = EffectPlanned(run_id="r", seq=1, at=0.0, step="s", name="x")
file_ops().write(fd, encode_frame(plan, bytes(8)))
atomic_write(where / "store.json", b"{}")
"""


def test_child_processes_run_under_the_checker_too(
    ordering_checker: OrderingChecker, tmp_path: Path
) -> None:
    """A Python process a test starts (from anywhere) logs what its own checker sees, and
    the fixture reads the log: the crash sweeps and the CLI tests are covered too."""
    log = Path(os.environ[ENV_LOG])
    done = subprocess.run(
        [sys.executable, "-c", MISORDERING_CHILD, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("[pid ") for line in lines)
    assert [line.split("] ", 1)[1].split(" ")[0] for line in lines] == [
        "create",
        "write",
        "replace",
    ]
    assert all("effect_planned record is not durable" in line for line in lines)
    log.write_text("")  # seen: the child broke the rule on purpose
