"""The one exception tree of orchestrator.

Every error says what went wrong, where (workflow, run id, step, file, byte offset) and what
to do about it. The command line maps each class to an exit code (``exit_code``) and prints
the message on one line; it never shows a traceback for these.

::

    OrchestratorError
    ├── UsageError              bad input from a user or a host (exit 2)
    │   └── UnknownWorkflow     no workflow of that name is registered
    ├── SpecError               a workflow definition is invalid (exit 2)
    ├── JournalError            the journal cannot be used (exit 2 unless said otherwise)
    │   ├── JournalUnavailable  the journal directory or file cannot be opened or written
    │   ├── JournalVersionError a journal file of another format version (exit 3)
    │   └── JournalCorrupt      a bad record followed by valid ones (exit 3)
    ├── ResumeRefused           an interrupted run cannot be resumed safely (exit 3)
    ├── CorruptFile             a file a workflow depends on is unreadable or invalid (exit 3)
    ├── KeyBusy                 another process holds the run key for too long (exit 1)
    └── LeaseLost               this host no longer owns a run: another took it over (exit 1)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = (
    "CorruptFile",
    "JournalCorrupt",
    "JournalError",
    "JournalUnavailable",
    "JournalVersionError",
    "KeyBusy",
    "LeaseLost",
    "OrchestratorError",
    "ResumeRefused",
    "SpecError",
    "UnknownWorkflow",
    "UsageError",
)


class OrchestratorError(Exception):
    """Base class of every error this library raises on purpose."""

    #: The process exit code the command line uses for this error.
    exit_code: int = 2


class UsageError(OrchestratorError):
    """Bad input: an unknown key, a malformed option, an impossible request."""

    exit_code = 2


class UnknownWorkflow(UsageError):
    """No workflow of that name is registered."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        listing = ", ".join(self.known) or "none"
        super().__init__(
            f"unknown workflow {name!r}; registered workflows: {listing} "
            "(a package adds workflows through the 'orchestrator.workflows' entry point group)"
        )


class SpecError(OrchestratorError):
    """A workflow definition is invalid; raised when the spec is built."""

    exit_code = 2

    def __init__(self, workflow: str, problem: str, *, state: str | None = None) -> None:
        self.workflow = workflow
        self.state = state
        self.problem = problem
        where = f"workflow {workflow!r}" + (f", state {state!r}" if state is not None else "")
        super().__init__(f"invalid spec ({where}): {problem}")


class JournalError(OrchestratorError):
    """The journal cannot be used."""

    exit_code = 2


class JournalUnavailable(JournalError):
    """The journal directory or file cannot be created, opened or written."""

    def __init__(self, path: Path | str, reason: str, *, hint: str | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        fix = hint or "check that the directory exists, is writable by this user and has space"
        # str(path), not self.path: a database URL is no file path ('//' would collapse).
        super().__init__(f"journal {path} unavailable: {reason}; {fix}")


class JournalVersionError(JournalError):
    """A journal file was written in a format this version does not read."""

    exit_code = 3

    def __init__(self, path: Path | str, found: object, expected: int) -> None:
        self.path = Path(path)
        self.found = found
        self.expected = expected
        super().__init__(
            f"journal {self.path} has format version {found}, this orchestrator reads "
            f"version {expected}; use the orchestrator release that wrote it, "
            "or move the file aside"
        )


class JournalCorrupt(JournalError):
    """A bad record is followed by valid records: the journal is damaged in its middle.

    A damaged *tail* (nothing valid after it) is what a crash during a write leaves; it is
    cut off and kept aside automatically. Damage before valid records is not, so nothing is
    resumed automatically from such a journal.
    """

    exit_code = 3

    def __init__(self, path: Path | str, offset: int, reason: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
        where = f" at byte {offset}" if offset >= 0 else ""
        super().__init__(
            f"journal {self.path} corrupt{where} ({reason}), with valid records "
            "after it; nothing was resumed. Inspect it with 'orchestrator journal verify' and "
            "keep a copy before any repair"
        )


class ResumeRefused(OrchestratorError):
    """An interrupted run cannot be resumed safely (e.g. its workflow definition changed)."""

    exit_code = 3

    def __init__(self, run_id: str, reason: str, *, hint: str) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(f"run {run_id} not resumed: {reason}; {hint}")


class CorruptFile(OrchestratorError):
    """A file a workflow reads (e.g. a session store) is unreadable or invalid.

    Such a file is never treated as empty: writing back "nothing" is how data gets lost.
    """

    exit_code = 3

    def __init__(self, path: Path | str, reason: str, *, hint: str | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        fix = hint or "the file was left untouched; restore it from a backup or fix it by hand"
        super().__init__(f"{self.path} is unreadable: {reason}; {fix}")


class KeyBusy(OrchestratorError):
    """Another process holds the run key and did not release it in time."""

    exit_code = 1

    def __init__(self, key: str, waited: float, holder: str | None = None) -> None:
        self.key = key
        self.waited = waited
        self.holder = holder
        who = f" (held by {holder})" if holder else ""
        super().__init__(
            f"key {key!r} is busy{who}: another run of it did not finish within "
            f"{waited:g} s; try again later, or check that process"
        )


class LeaseLost(OrchestratorError):
    """This host's lease on a run's key expired or was taken over: it must not write again.

    Raised by a shared (PostgreSQL) journal when an append is fenced off. The run is not
    lost: the host that holds the key now resumes it from the journal.
    """

    exit_code = 1

    def __init__(self, run_id: str, key: str, reason: str) -> None:
        self.run_id = run_id
        self.key = key
        self.reason = reason
        super().__init__(
            f"run {run_id} (key {key!r}) stopped: {reason}; the host holding the key now "
            "finishes it (see 'orchestrator runs show' for its end)"
        )
