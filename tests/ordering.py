"""The always-on ordering checker: every in-process test runs under it (``tests/conftest.py``).

The rule (DESIGN.md, "Durability rule"; issue "Power loss"): no effect before its intent is
durable, and no completion record before the effect's file and directory fsyncs. The checker
sits in the ``FileOps`` seam as a layer (``orchestrator._fs.layer_file_ops``) around whatever
ops are installed, so a test's own ops (fault injection, the power-loss model) still do the
work underneath, and it tracks:

- per open descriptor: the file's (device, inode), its path, and whether it is a journal
  file (its name contains ``.jrnl``: ``*.jrnl``, their temps, their ``.broken`` side files);
- per inode: writes not yet covered by an ``fsync`` (a generation counter: an fsync covers
  what was written before it started, so a write racing a threaded fsync stays unsynced);
- per directory: names created, replaced, linked, unlinked or made since its last
  ``fsync_dir`` (a name created and removed again in between is no change at all).

It records a violation when

(a) a file outside the journal is created, written, truncated, replaced, linked or unlinked
    while an ``effect_planned`` record written earlier is not durable (its journal file not
    fsynced past it, or the journal file's own name not fsynced into its directory);
(b) a journal write carries a completion record while a file outside the journal changed
    earlier is not durable (bytes not fsynced, or a name not fsynced into its directory).
    Completion records: ``effect_applied``, and also a ``step_finished`` whose outcome is
    ``ok``: the workflows record an effect's completion as its step's outcome (no step
    calls ``mark_applied`` today), so checking ``effect_applied`` alone would check
    nothing. A failed attempt claims nothing; neither does ``run_finished`` (a run may
    succeed past a step that failed every attempt, and that step's record says so).

Store and key lock files (``*.lock``, ``*.lock.*.tmp``) are no effects: they guard them.
A journal write is decoded as the frames it holds; bytes that are no whole frames (a test's
hand-made records) are searched for the records' msgpack-encoded tags instead.

Limits: only operations through the seam are seen (by design every file operation of the
journal and of the local session adapter). Tests that run the tool in a subprocess (the CLI
tests, the crash sweeps) are not covered: the checker lives in the test process. When a test
installs other ops, the tracking of what is durable starts afresh (a simulated crash or
restart comes with that, and what the "dead" process left unsynced is the new process's
starting point, not its fault); descriptors stay known. ``rename_noreplace`` is seen as the
``link`` and ``unlink`` it is made of (as ``FileOps`` does it).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import msgspec

from orchestrator import EffectApplied, EffectPlanned, FileOps, StepFinished
from orchestrator._fs import DIR_MODE, FILE_MODE
from orchestrator._journal.framing import FRAME_HEAD, HEADER_SIZE, MAGIC
from orchestrator._journal.records import Record

__all__ = (
    "COMPLETIONS",
    "EFFECT_APPLIED",
    "EFFECT_PLANNED",
    "ENV_LOG",
    "OrderingChecker",
    "install_from_env",
)

#: Where a child process's checker appends its violations, one a line (``ordering_site``).
ENV_LOG = "ORDERING_CHECK_LOG"

#: How the record types read in the journal's msgpack encoding (a fixstr: 0xa0 + length).
EFFECT_PLANNED = b"\xaeeffect_planned"
EFFECT_APPLIED = b"\xaeeffect_applied"
STEP_FINISHED = b"\xadstep_finished"
#: Completion records, with the field that names what completed.
COMPLETIONS = (
    (EFFECT_APPLIED, b"\xa4name"),
    (STEP_FINISHED, b"\xa4step"),
)
_NAME_FIELD = b"\xa4name"

Ino = tuple[int, int]
_LENGTH = struct.Struct(">I")
_record_decoder = msgspec.msgpack.Decoder(Record)


def _is_lock(name: str) -> bool:
    return name.endswith(".lock") or (".lock." in name and name.endswith(".tmp"))


def _is_journal(name: str) -> bool:
    return ".jrnl" in name


@dataclass(slots=True)
class _Open:
    ino: Ino
    path: str
    journal: bool
    lock: bool


@dataclass(slots=True)
class _Name:
    """A name changed in a directory since its last ``fsync_dir``."""

    gen: int
    new: bool  # absent at the last fsync_dir: removing it again undoes the change
    what: str


class OrderingChecker(FileOps):
    """See the module docstring. ``violations`` lists what broke the rule, in order."""

    def __init__(self, inner: FileOps | None = None) -> None:
        self.inner = inner if inner is not None else FileOps()
        self.violations: list[str] = []
        self._fds: dict[int, _Open] = {}
        self._forget()

    def around(self, ops: FileOps) -> FileOps:
        """The layer function for ``layer_file_ops``: delegate to ``ops`` from now on."""
        if ops is not self and ops is not self.inner:
            self.inner = ops
            self._forget()
        return self

    def _forget(self) -> None:
        self._gen = 0
        #: Journal inode -> (generation of its last effect_planned write, what it planned).
        self._plans: dict[Ino, tuple[int, str]] = {}
        #: Journal inodes that carried a plan -> their current path (for the name's sync).
        self._planned: dict[Ino, str] = {}
        #: Inode outside the journal -> (generation of its last unsynced write, its path).
        self._dirty: dict[Ino, tuple[int, str]] = {}
        #: Directory -> name -> its change since the directory's last fsync_dir.
        self._names: dict[str, dict[str, _Name]] = {}

    # -- bookkeeping -----------------------------------------------------------------------

    def _step(self) -> int:
        self._gen += 1
        return self._gen

    def _name_set(self, path: str, what: str, *, new: bool) -> None:
        directory, _, name = path.rpartition(os.sep)
        names = self._names.setdefault(directory, {})
        before = names.get(name)
        names[name] = _Name(self._step(), before.new if before else new, what)

    def _name_del(self, path: str, what: str) -> None:
        directory, _, name = path.rpartition(os.sep)
        names = self._names.setdefault(directory, {})
        before = names.get(name)
        if before is not None and before.new:
            del names[name]  # made and removed since the last sync: nothing changed
        else:
            names[name] = _Name(self._step(), False, what)

    def _name_pending(self, path: str) -> _Name | None:
        directory, _, name = path.rpartition(os.sep)
        names = self._names.get(directory)
        return names.get(name) if names else None

    # -- the two checks --------------------------------------------------------------------

    def _effect(self, op: str, path: str) -> None:
        """Check (a): ``op`` just changed ``path``, outside the journal."""
        if not self._planned:
            return
        early = [f"{where} (written, not fsynced)" for _, where in self._plans.values()]
        for journal in self._planned.values():
            if self._name_pending(journal) is not None:
                early.append(f"{journal}'s name (not fsynced into its directory)")
        if early:
            self.violations.append(
                f"{op} {path} while an effect_planned record is not durable: " + "; ".join(early)
            )

    def _completed(self, journal: str, what: str) -> None:
        """Check (b): a journal write carrying a completion record (``what``)."""
        early = [f"{path}: bytes written, not fsynced" for _, path in self._dirty.values()]
        for directory, names in self._names.items():
            for name, change in names.items():
                if not _is_journal(name):
                    early.append(f"{directory}{os.sep}{name}: {change.what}, directory not fsynced")
        if early:
            self.violations.append(
                f"{what} written to {journal} while not durable: " + "; ".join(early)
            )

    # -- the primitives --------------------------------------------------------------------

    def open(self, path: Path, flags: int, mode: int = FILE_MODE) -> int:
        where = os.path.abspath(path)
        name = where.rpartition(os.sep)[2]
        journal, lock = _is_journal(name), _is_lock(name)
        creates = bool(flags & os.O_CREAT) and (
            bool(flags & os.O_EXCL) or not os.path.lexists(where)
        )
        fd = self.inner.open(path, flags, mode)
        st = os.fstat(fd)
        opened = _Open((st.st_dev, st.st_ino), where, journal, lock)
        self._fds[fd] = opened
        if lock:
            return fd
        if creates:
            self._name_set(where, "created", new=True)
        if journal:
            return fd
        if creates or flags & os.O_TRUNC:
            self._effect("create" if creates else "truncate", where)
        if flags & os.O_TRUNC:
            self._dirty[opened.ino] = (self._step(), where)
        return fd

    def write(self, fd: int, data: bytes) -> None:
        self.inner.write(fd, data)
        opened = self._fds.get(fd)
        if opened is None or opened.lock:
            return
        gen = self._step()
        if not opened.journal:
            self._effect("write", opened.path)
            self._dirty[opened.ino] = (gen, opened.path)
            return
        records = _decode_frames(data)
        if records is None:  # not whole frames: read the tags out of the bytes
            completion = next((c for c in COMPLETIONS if c[0] in data), None)
            if completion is not None:
                name = completion[0][1:].decode()
                self._completed(opened.path, f"{name} {_record_name(data, *completion)}")
            plan = _record_name(data, EFFECT_PLANNED, _NAME_FIELD, last=True)
            planned = EFFECT_PLANNED in data
        else:
            done = next((r for r in records if _completes(r)), None)
            if done is not None:
                self._completed(opened.path, _describe(done))
            plans = [r for r in records if isinstance(r, EffectPlanned)]
            planned = bool(plans)
            plan = repr(plans[-1].name) if plans else "?"
        if planned:
            self._plans[opened.ino] = (gen, f"{opened.path} (plan {plan})")
            self._planned.setdefault(opened.ino, opened.path)

    def fsync(self, fd: int) -> None:
        mark = self._gen  # the fsync covers what was written before it started
        self.inner.fsync(fd)
        opened = self._fds.get(fd)
        if opened is None:
            return
        plan = self._plans.get(opened.ino)
        if plan is not None and plan[0] <= mark:
            del self._plans[opened.ino]
        dirty = self._dirty.get(opened.ino)
        if dirty is not None and dirty[0] <= mark:
            del self._dirty[opened.ino]

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        self.inner.close(fd)

    def truncate(self, fd: int, length: int) -> None:
        self.inner.truncate(fd, length)
        opened = self._fds.get(fd)
        if opened is not None and not opened.journal and not opened.lock:
            self._effect("truncate", opened.path)
            self._dirty[opened.ino] = (self._step(), opened.path)

    def read(self, path: Path) -> bytes:
        return self.inner.read(path)

    def replace(self, src: Path, dst: Path) -> None:
        source, target = os.path.abspath(src), os.path.abspath(dst)
        target_name = target.rpartition(os.sep)[2]
        moved = _inode(source) if _is_journal(target_name) else None
        self.inner.replace(src, dst)
        if not _is_lock(source.rpartition(os.sep)[2]):
            self._name_del(source, "moved away")
        if _is_lock(target_name):
            return
        self._name_set(target, "replaced", new=False)
        if moved is not None:  # a journal file's descriptors now go by its new name
            for opened in self._fds.values():
                if opened.ino == moved:
                    opened.path = target
            if moved in self._planned:
                self._planned[moved] = target
        if not _is_journal(target_name):
            self._effect("replace", target)

    def link(self, src: Path, dst: Path) -> None:
        target = os.path.abspath(dst)
        name = target.rpartition(os.sep)[2]
        self.inner.link(src, dst)
        if _is_lock(name):
            return
        self._name_set(target, "linked", new=True)
        if not _is_journal(name):
            self._effect("link", target)

    def unlink(self, path: Path) -> None:
        where = os.path.abspath(path)
        name = where.rpartition(os.sep)[2]
        if _is_lock(name):
            self.inner.unlink(path)
            return
        gone = _inode(where, last_link=True)
        self.inner.unlink(path)
        self._name_del(where, "unlinked")
        if gone is not None:
            # The inode went with its last name: its unsynced bytes no longer matter.
            self._dirty.pop(gone, None)
        if not _is_journal(name):
            self._effect("unlink", where)

    def mkdir(self, path: Path, mode: int = DIR_MODE) -> None:
        self.inner.mkdir(path, mode)
        self._name_set(os.path.abspath(path), "made (mkdir)", new=True)

    def fsync_dir(self, path: Path) -> None:
        mark = self._gen
        self.inner.fsync_dir(path)
        names = self._names.get(os.path.abspath(path))
        if names:
            for name in [n for n, change in names.items() if change.gen <= mark]:
                del names[name]


def _decode_frames(data: bytes) -> list[Record] | None:
    """The records framed in one journal write (a file header first, if it starts one), or
    None if ``data`` is not whole frames."""
    pos = HEADER_SIZE if data.startswith(MAGIC) else 0
    payloads = []
    while pos < len(data):
        if pos + FRAME_HEAD > len(data):
            return None
        (length,) = _LENGTH.unpack_from(data, pos)
        end = pos + FRAME_HEAD + length
        if end > len(data):
            return None
        payloads.append(data[pos + FRAME_HEAD : end])
        pos = end
    try:
        return [_record_decoder.decode(p) for p in payloads]
    except msgspec.DecodeError:
        return None


def _completes(record: Record) -> bool:
    """Whether ``record`` says an effect is done: an effect's own completion, or a step that
    ended ``ok``. A failed attempt claims nothing, nor does ``run_finished``: a run may
    succeed past a step that failed every attempt (archive and unbind are passed by
    design), and the step's own record says so."""
    if isinstance(record, StepFinished):
        return record.outcome == "ok"
    return isinstance(record, EffectApplied)


def _describe(record: Record) -> str:
    if isinstance(record, EffectApplied):
        return f"effect_applied {record.name!r}"
    assert isinstance(record, StepFinished)
    return f"step_finished {record.step!r}"


def _inode(path: str, *, last_link: bool = False) -> Ino | None:
    """``path``'s (device, inode), not following a symlink; with ``last_link``, only if
    ``path`` is its last name. None if there is nothing there."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if last_link and st.st_nlink > 1:
        return None
    return (st.st_dev, st.st_ino)


def _record_name(data: bytes, tag: bytes, field: bytes, *, last: bool = False) -> str:
    """The ``field`` of the (first, or last) record tagged ``tag`` in ``data``, for the
    messages: a msgpack fixstr or str8 after the field's key, else ``?``."""
    at = data.rfind(tag) if last else data.find(tag)
    key = data.find(field, at)
    if at < 0 or key < 0:
        return "?"
    start = key + len(field)
    head = data[start : start + 2]
    if head and 0xA0 <= head[0] <= 0xBF:
        size, start = head[0] - 0xA0, start + 1
    elif len(head) == 2 and head[0] == 0xD9:
        size, start = head[1], start + 2
    else:
        return "?"
    return repr(data[start : start + size].decode(errors="replace"))


class _AppendedToFile(list[str]):
    """Violations that are also appended to a file as they come: one ``O_APPEND`` write a
    line, so each survives a SIGKILL that follows."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def append(self, violation: str) -> None:
        super().append(violation)
        line = f"[pid {os.getpid()}] " + violation.replace("\n", " ")
        os.write(self._fd, line.encode(errors="replace") + b"\n")


def install_from_env() -> OrderingChecker | None:
    """In a child process: check every file operation from now on, logging violations to
    the file named by ``ORDERING_CHECK_LOG`` (nothing is done without it)."""
    path = os.environ.get(ENV_LOG)
    if not path:
        return None
    from orchestrator._fs import file_ops, layer_file_ops

    checker = OrderingChecker(file_ops())
    checker.violations = _AppendedToFile(path)
    layer_file_ops(checker.around)
    return checker
