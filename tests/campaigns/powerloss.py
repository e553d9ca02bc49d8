"""A ``FileOps`` that simulates power loss (campaign 2).

``PowerLossOps`` performs every operation on the real disk (so the run reads what it wrote)
and keeps, for the state directory under ``root``, a model of what is *durable*:

- per inode (the real ``st_ino``): its current bytes (read back after every write or
  truncate) and its durable bytes, set by ``fsync`` of a descriptor on it;
- per directory: its current names (name -> inode) and its durable names, set by
  ``fsync_dir``; the namespace operations since the last ``fsync_dir`` of a directory are
  logged (create, link, unlink, replace within the directory as one atomic move; a replace
  across directories as an unlink and a create). ``fsync`` of a file does *not* make its
  name durable (the conservative rule).

Everything under ``root`` when the ops are made is taken as durable. Every ``fsync`` and
``fsync_dir`` is a *sync boundary*; with ``cut_at=k`` the k-th one completes and then
``PowerCut`` (a ``BaseException``, so no step catches it as an error) is raised; from then
on the process is dead: every mutating operation raises ``PowerCut`` without touching the
model (``close`` still closes, so no descriptor leaks; reads still read).

``damage(rng, mode)`` builds one state the disk could show after the cut: the durable names
of each directory with the unsynced namespace operations applied all, none, a random subset
in order, a random subset reordered, or a prefix; and each file's durable bytes followed by
its unsynced tail (when the current bytes extend the durable ones) kept, dropped, torn at a
random length, or torn and zero-filled (the size made it, the data did not). ``materialize``
writes such a state into a directory (hard links as hard links, symlinks as symlinks).

The ordering checker (``journal`` set to the journal directory): before any operation that
changes a file outside the journal (create, write, truncate, replace, link, unlink; store
lock files excepted, they guard effects and are none), every ``EffectPlanned`` record
written into a journal file so far must be durable (the file durable at least to the end
of the write that carried it); otherwise the operation is listed in ``early_effects``.

Simplifications: files are identified by inode number (the run does not reuse one within a
cut's lifetime in practice: unlinked inodes stay in the model with their bytes); a file
whose current bytes do not extend its durable bytes (a truncate, a rewrite in place) shows
either the durable or the current bytes, whole; directory renames are not modelled (the
tool never renames one); syncs do not reach the real disk (the model is what counts).
"""

from __future__ import annotations

import os
import random
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import FileOps
from orchestrator._fs import DIR_MODE, FILE_MODE

#: How an ``EffectPlanned`` record's type reads in the journal's msgpack encoding.
EFFECT_PLANNED = b"\xaeeffect_planned"

__all__ = ("MODES", "Damage", "PowerCut", "PowerLossOps", "materialize")

#: The ways unsynced directory operations survive a cut.
MODES = ("durable", "everything", "subset", "reordered", "prefix")


class PowerCut(BaseException):
    """The power went out (raised right after the chosen sync boundary completed)."""


@dataclass(slots=True)
class Inode:
    kind: str  # "file", "dir", "symlink"
    data: bytes = b""
    durable: bytes = b""
    target: str = ""  # a symlink's


@dataclass(slots=True)
class Damage:
    """One state the disk could show after the cut."""

    mode: str
    #: directory path -> name -> inode
    names: dict[str, dict[str, int]]
    #: inode -> bytes
    data: dict[int, bytes]
    #: What was dropped, torn, reordered (for a problem's description).
    notes: list[str] = field(default_factory=list)


class PowerLossOps(FileOps):
    """See the module docstring."""

    def __init__(self, root: Path, cut_at: int | None = None) -> None:
        self.root = str(root)
        self.cut_at = cut_at
        #: Sync boundaries passed so far, each described ("fsync <path>", "fsync_dir <path>").
        self.boundaries: list[str] = []
        self.dead = False
        self.inodes: dict[int, Inode] = {}
        self.names: dict[str, dict[str, int]] = {}
        self.durable_names: dict[str, dict[str, int]] = {}
        self.log: dict[str, list[tuple[str, ...]]] = {}
        self._fds: dict[int, tuple[int, str]] = {}  # fd -> (inode, path at open)
        #: The ordering checker: the journal directory, and per journal inode the length
        #: its file must be durable to for the last ``EffectPlanned`` written into it.
        self.journal: str | None = None
        self._plans: dict[int, tuple[int, str]] = {}
        #: Effects on the state outside the journal made while a plan was not durable.
        self.early_effects: list[str] = []
        self._scan(root)

    # -- the model -------------------------------------------------------------------------

    def _scan(self, directory: Path) -> None:
        listing: dict[str, int] = {}
        for entry in os.scandir(directory):
            st = entry.stat(follow_symlinks=False)
            listing[entry.name] = st.st_ino
            if st.st_ino in self.inodes:
                continue
            if stat.S_ISLNK(st.st_mode):
                self.inodes[st.st_ino] = Inode("symlink", target=os.readlink(entry.path))
            elif stat.S_ISDIR(st.st_mode):
                self.inodes[st.st_ino] = Inode("dir")
                self._scan(Path(entry.path))
            else:
                data = Path(entry.path).read_bytes()
                self.inodes[st.st_ino] = Inode("file", data, data)
        self.names[str(directory)] = listing
        self.durable_names[str(directory)] = dict(listing)
        self.log[str(directory)] = []

    def _tracked(self, path: Path) -> bool:
        parent = str(path.parent)
        return parent in self.names

    def _alive(self) -> None:
        if self.dead:
            raise PowerCut("the power is out")

    def _refresh(self, fd: int) -> None:
        ino, _ = self._fds.get(fd, (None, ""))
        if ino is None:
            return
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            self.inodes[ino].data = f.read()

    def _boundary(self, what: str) -> None:
        self.boundaries.append(what)
        if self.cut_at is not None and len(self.boundaries) == self.cut_at:
            self.dead = True
            raise PowerCut(what)

    def _effect(self, op: str, path: Path) -> None:
        """The ordering checker: an operation changing ``path`` is about to happen."""
        if self.journal is None or str(path).startswith(self.journal + os.sep):
            return
        name = path.name
        if name.endswith(".lock") or (".lock." in name and name.endswith(".tmp")):
            return  # a store lock guards effects; it is none itself
        for ino, (need, plan) in self._plans.items():
            durable = len(self.inodes[ino].durable)
            if durable < need:
                rel = os.path.relpath(path, self.root)
                self.early_effects.append(
                    f"{op} {rel} while the journal is durable to {durable} < {need} ({plan})"
                )

    def _set(self, path: Path, ino: int) -> None:
        d = str(path.parent)
        self.names[d][path.name] = ino
        self.log[d].append(("set", path.name, str(ino)))

    def _del(self, path: Path) -> None:
        d = str(path.parent)
        self.names[d].pop(path.name, None)
        self.log[d].append(("del", path.name))

    # -- the primitives --------------------------------------------------------------------

    def open(self, path: Path, flags: int, mode: int = FILE_MODE) -> int:
        self._alive()
        if flags & (os.O_CREAT | os.O_TRUNC):
            self._effect("create", path)
        existed = os.path.lexists(path)
        fd = super().open(path, flags, mode)
        if not self._tracked(path):
            return fd
        ino = os.fstat(fd).st_ino
        if ino not in self.inodes:
            self.inodes[ino] = Inode("file")
        self._fds[fd] = (ino, str(path))
        if not existed:
            self._set(path, ino)
        if flags & os.O_TRUNC:
            self._refresh(fd)
        return fd

    def write(self, fd: int, data: bytes) -> None:
        self._alive()
        entry = self._fds.get(fd)
        in_journal = (
            entry is not None
            and self.journal is not None
            and entry[1].startswith(self.journal + os.sep)
        )
        if not in_journal and entry is not None:
            self._effect("write", Path(entry[1]))
        super().write(fd, data)
        self._refresh(fd)
        at = data.rfind(EFFECT_PLANNED)
        if in_journal and entry is not None and at >= 0:
            name = data[at + len(EFFECT_PLANNED) :][:40]
            self._plans[entry[0]] = (len(self.inodes[entry[0]].data), repr(name))

    def truncate(self, fd: int, length: int) -> None:
        self._alive()
        if fd in self._fds:
            self._effect("truncate", Path(self._fds[fd][1]))
        super().truncate(fd, length)
        self._refresh(fd)

    def fsync(self, fd: int) -> None:
        self._alive()
        if fd in self._fds:
            ino, path = self._fds[fd]
            self._refresh(fd)
            self.inodes[ino].durable = self.inodes[ino].data
            self._boundary(f"fsync {os.path.relpath(path, self.root)}")

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        super().close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        self._alive()
        self._effect("replace", dst)
        tracked = self._tracked(src) and self._tracked(dst)
        ino = os.lstat(src).st_ino if tracked else 0
        super().replace(src, dst)
        if not tracked:
            return
        if src.parent == dst.parent:
            d = str(src.parent)
            self.names[d].pop(src.name, None)
            self.names[d][dst.name] = ino
            self.log[d].append(("move", src.name, dst.name, str(ino)))
        else:
            self._del(src)
            self._set(dst, ino)

    def link(self, src: Path, dst: Path) -> None:
        self._alive()
        self._effect("link", dst)
        super().link(src, dst)
        if self._tracked(dst):
            self._set(dst, os.lstat(dst).st_ino)

    def unlink(self, path: Path) -> None:
        self._alive()
        self._effect("unlink", path)
        super().unlink(path)
        if self._tracked(path):
            self._del(path)

    def mkdir(self, path: Path, mode: int = DIR_MODE) -> None:
        self._alive()
        super().mkdir(path, mode)
        if self._tracked(path):
            ino = os.lstat(path).st_ino
            self.inodes[ino] = Inode("dir")
            self.names[str(path)] = {}
            self.durable_names[str(path)] = {}
            self.log[str(path)] = []
            self._set(path, ino)

    def fsync_dir(self, path: Path) -> None:
        self._alive()
        d = str(path)
        if d in self.names:
            self.durable_names[d] = dict(self.names[d])
            self.log[d] = []
            self._boundary(f"fsync_dir {os.path.relpath(d, self.root)}")

    # -- after the cut ---------------------------------------------------------------------

    def unsynced(self) -> int:
        """How many namespace operations and file tails the cut left unsynced."""
        ops = sum(len(v) for v in self.log.values())
        tails = sum(i.kind == "file" and i.data != i.durable for i in self.inodes.values())
        return ops + tails

    def damage(self, rng: random.Random, mode: str) -> Damage:
        """One state the disk could show after the cut (module docstring)."""
        result = Damage(mode, {}, {})
        for d, durable in self.durable_names.items():
            listing = dict(durable)
            log = self.log[d]
            if mode == "durable":
                chosen: list[tuple[str, ...]] = []
            elif mode == "everything":
                chosen = list(log)
            elif mode == "prefix":
                chosen = log[: rng.randint(0, len(log))]
            else:
                chosen = [op for op in log if rng.random() < 0.5]
                if mode == "reordered":
                    rng.shuffle(chosen)
            if len(chosen) < len(log) or mode == "reordered":
                rel = os.path.relpath(d, self.root)
                result.notes.append(f"{rel}: kept {len(chosen)}/{len(log)} name ops")
            for op in chosen:
                if op[0] == "set":
                    listing[op[1]] = int(op[2])
                elif op[0] == "del":
                    listing.pop(op[1], None)
                elif listing.get(op[1]) == int(op[3]):  # a move whose source is there
                    del listing[op[1]]
                    listing[op[2]] = int(op[3])
            if mode == "everything":
                assert listing == self.names[d], f"the model lost track of {d}"
            result.names[d] = listing
        for ino, inode in self.inodes.items():
            if inode.kind != "file":
                continue
            result.data[ino] = self._bytes(rng, mode, inode, result.notes)
        return result

    @staticmethod
    def _bytes(rng: random.Random, mode: str, inode: Inode, notes: list[str]) -> bytes:
        if inode.data == inode.durable or mode == "everything":
            return inode.data
        if mode == "durable":
            return inode.durable
        if not inode.data.startswith(inode.durable):
            return rng.choice((inode.durable, inode.data))
        tail = inode.data[len(inode.durable) :]
        how = rng.choice(("keep", "drop", "tear", "zeros"))
        if how == "keep":
            return inode.data
        if how == "drop":
            return inode.durable
        cut = rng.randint(0, len(tail))
        notes.append(f"a {len(tail)}-byte tail {how} at {cut}")
        if how == "tear":
            return inode.durable + tail[:cut]
        return inode.durable + tail[:cut] + b"\0" * (len(tail) - cut)


#: How long ago the files were last modified when the state is looked at again (the reboot).
REBOOT_SECONDS = 60


def materialize(ops: PowerLossOps, damage: Damage, target: Path) -> None:
    """Write ``damage`` as a directory tree at ``target`` (which must not exist), every file
    last modified ``REBOOT_SECONDS`` ago."""
    made: dict[int, Path] = {}
    then = time.time() - REBOOT_SECONDS

    def fill(directory: str, at: Path) -> None:
        at.mkdir(mode=DIR_MODE)
        for name, ino in sorted(damage.names.get(directory, {}).items()):
            inode = ops.inodes[ino]
            path = at / name
            if inode.kind == "dir":
                fill(os.path.join(directory, name), path)
            elif inode.kind == "symlink":
                path.symlink_to(inode.target)
            elif ino in made:
                os.link(made[ino], path)
            else:
                path.write_bytes(damage.data[ino])
                path.chmod(FILE_MODE)
                os.utime(path, (then, then))
                made[ino] = path

    fill(ops.root, target)
