"""Campaign 6, hostile input and files: keys, stored ids and paths, symlinks, modes, umask.

Every probe runs on its own world: ``<root>/state`` (a seeded OpenClaw state directory) with
sentinels beside it (``<root>/outside.jsonl``, ``<root>/abs-target.jsonl``, a directory
``<root>/elsewhere/``), which the corpus aims at with ``..``, absolute paths and symlinks.
Most probes drive the real command line (``python -m orchestrator reset|delete KEY
--state-dir <root>/state``); NUL, which no argument can carry, goes through the service API.

After each probe:

- nothing outside the state directory changed (every path under ``<root>`` but ``state``:
  kind, mode, inode, bytes or link target);
- the store is still a JSON object, and only the entry the key names (and its aliases)
  changed; a transcript moved only if it is that entry's, to ``<file>.reset|deleted.<ts>``
  with its bytes; nothing else appeared in the state directory but the journal, the new
  transcript, the farewell log;
- ``--json`` printed exactly one line of JSON (or, for an error raised before any run,
  nothing, with one line on stderr); human output is one line, every character printable.

Then the files and modes: symlinked sessions directories (and their parents) are refused
(exit 2, nothing changed), a symlink planted at an archive target is neither followed nor
replaced, a world-writable state directory is refused, and under umask 000 and 022 every
file the tool creates is 0600 and every directory 0700 (transient files too: seen by killing
the tool at failpoints while they exist).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator import ENV_CRASH_AT, FileJournal, open_engine
from orchestrator.cli import journal_dir
from orchestrator.errors import UsageError
from orchestrator.testing import FakeClock
from workflows.sessions.adapters.local import LocalHost
from workflows.sessions.config import load_config
from workflows.sessions.demo import seed_state
from workflows.sessions.keys import resolve_target
from workflows.sessions.service import SessionService
from workflows.sessions.transcripts import archive_path

from .conftest import SOAK, report

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = Path("agents/main/sessions")
MAIN = "agent:main:main"
TELEGRAM = "agent:main:telegram:direct:42"
#: Probes run in parallel (each on its own world): the CLI's start-up dominates.
WORKERS = 4
#: Look-alikes: CYRILLIC SMALL LETTER A, and fullwidth forms of ASCII.
CYRILLIC_A = "\u0430"


def fullwidth(text: str) -> str:
    """``text`` in fullwidth forms (``a`` -> U+FF41, ``/`` -> U+FF0F, ``.`` -> U+FF0E)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


ARCHIVED = re.compile(
    r"(?P<src>.+)\.(?:reset|deleted)\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z", re.DOTALL
)


# -- a world: the state directory and what lies beside it -----------------------------------


@dataclass(frozen=True, slots=True)
class World:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def sessions(self) -> Path:
        return self.state / SESSIONS

    @property
    def outside(self) -> Path:
        return self.root / "outside.jsonl"

    @property
    def abs_target(self) -> Path:
        return self.root / "abs-target.jsonl"

    @property
    def elsewhere(self) -> Path:
        return self.root / "elsewhere"

    def store(self) -> dict[str, Any]:
        return orjson.loads((self.sessions / "sessions.json").read_bytes())  # type: ignore[no-any-return]

    def write_store(self, store: dict[str, Any]) -> None:
        (self.sessions / "sessions.json").write_bytes(
            orjson.dumps(store, option=orjson.OPT_INDENT_2)
        )

    def set_fields(self, key: str, **fields: object) -> None:
        store = self.store()
        store[key].update(fields)
        self.write_store(store)

    def expand(self, text: str) -> str:
        return (
            text.replace("{outside}", str(self.outside))
            .replace("{abs_target}", str(self.abs_target))
            .replace("{elsewhere}", str(self.elsewhere))
            .replace("{sessions}", str(self.sessions))
        )


def make_world(template: Path, root: Path) -> World:
    world = World(root)
    root.mkdir(parents=True)
    shutil.copytree(template, world.state, symlinks=True)
    store = world.sessions / "sessions.json"
    store.write_bytes(store.read_bytes().replace(str(template).encode(), str(world.state).encode()))
    world.outside.write_bytes(b'{"type":"session","id":"not-yours"}\nnot yours\n')
    world.abs_target.write_bytes(b"absolute target, not yours\n")
    world.elsewhere.mkdir()
    (world.elsewhere / "keep.txt").write_bytes(b"elsewhere, not yours\n")
    (root / "sentinel").write_bytes(b"sentinel\n")
    return world


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("hostile-template") / "state"
    state.mkdir()
    seed_state(state)
    return state


Entry = tuple[str, int, int, bytes]


def snapshot(top: Path, *, skip: Path | None = None) -> dict[str, Entry]:
    """Every path under ``top`` (not following symlinks): kind, mode, inode, bytes/target."""
    found: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        if skip is not None and here == skip:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            if skip is not None and path == skip:
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                data = os.readlink(path).encode()
            elif stat.S_ISREG(info.st_mode):
                data = path.read_bytes()
            else:
                data = b""
            found[str(path.relative_to(top))] = (
                stat.filemode(info.st_mode)[0],
                stat.S_IMODE(info.st_mode),
                info.st_ino,
                data,
            )
    return found


def diff(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    changes = [f"removed {p}" for p in before.keys() - after.keys()]
    changes += [f"created {p}" for p in after.keys() - before.keys()]
    changes += [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(changes)


# -- running the tool -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    out: str
    err: str


def cli(world: World, *argv: str, env: dict[str, str] | None = None, shell: str = "") -> Ran:
    """``python -m orchestrator ARGV --state-dir STATE`` (under ``sh -c SHELL`` if given)."""
    command = [sys.executable, "-m", "orchestrator", *argv, "--state-dir", str(world.state)]
    if shell:
        command = ["sh", "-c", f'{shell}; exec "$@"', "sh", *command]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return Ran(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def output_problems(ran: Ran, *, json: bool) -> list[str]:
    """One line per event: JSON on one line; human output one printable line."""
    problems = []
    if json:
        if ran.out:
            if ran.out.count("\n") != 1 or not ran.out.endswith("\n"):
                problems.append(f"--json printed {ran.out.count(chr(10))} lines: {ran.out!r:.200}")
            try:
                orjson.loads(ran.out)
            except orjson.JSONDecodeError as exc:
                problems.append(f"--json printed no JSON ({exc}): {ran.out!r:.200}")
        elif ran.err.count("\n") != 1:
            problems.append(f"--json printed nothing, and stderr is not one line: {ran.err!r:.300}")
        if ran.out and ran.err:
            problems.append(f"--json printed JSON and also on stderr: {ran.err!r:.200}")
    else:
        text = ran.out + ran.err
        if text.count("\n") != 1 or not text.endswith("\n"):
            problems.append(f"printed {text.count(chr(10))} lines, not one: {text!r:.300}")
        odd = sorted({c for c in text.rstrip("\n") if not c.isprintable()})
        if odd:
            problems.append(f"printed unprintable characters {odd}: {text!r:.300}")
    return problems


# -- what may change inside the state directory ------------------------------------------------


def targets(world: World, key: str) -> set[str]:
    """The store keys a request for ``key`` may change (none if the key is refused)."""
    try:
        return set(resolve_target(key, load_config(world.state), world.store()).store_keys)
    except UsageError:
        return set()


def state_problems(
    world: World, before: dict[str, Entry], store_before: dict[str, Any], touched: set[str]
) -> list[str]:
    """The store, transcripts and new files, against what a request on ``touched`` may do."""
    problems: list[str] = []
    try:
        store = world.store()
        assert isinstance(store, dict)
    except (OSError, orjson.JSONDecodeError, AssertionError) as exc:
        return [f"the store is no longer a JSON object of sessions: {exc}"]
    changed = {k for k in store_before.keys() | store.keys() if store_before.get(k) != store.get(k)}
    if changed - touched:
        problems.append(f"entries changed that the key does not name: {sorted(changed - touched)}")
    # Which transcripts may move: those of the entries the request names.
    movable = set()
    for key in touched:
        entry = store_before.get(key) or {}
        movable |= {f"{entry.get('sessionId')}.jsonl", Path(str(entry.get("sessionFile"))).name}
    new_files = {
        Path(str(e.get("sessionFile"))).name for e in store.values() if isinstance(e, dict)
    }
    after = snapshot(world.state)
    prefix = str(SESSIONS) + "/"

    def archives_of(path: str) -> list[str]:
        return [p for p in after if (m := ARCHIVED.fullmatch(p)) and m["src"] == path]

    for path in sorted(after.keys() - before.keys()):
        name = path.removeprefix(prefix)
        if path.startswith("orchestrator") or path == "bindings/farewells.jsonl":
            continue
        match = ARCHIVED.fullmatch(path)
        if match and match["src"] in before:
            src = match["src"]
            if not src.startswith(prefix) or src.removeprefix(prefix) not in movable:
                problems.append(f"archived {src!r}, which is not the entry's transcript")
            elif after[path][3] != before[src][3]:
                problems.append(f"the archive {path!r} does not hold the bytes of {src!r}")
            continue
        if (
            path.startswith(prefix)
            and name in new_files
            and path != str(SESSIONS / "sessions.json")
        ):
            header = after[path][3].split(b"\n", 1)[0]
            if not header.startswith(b'{"type":"session"'):
                problems.append(f"new transcript {path!r} has no session header: {header[:80]!r}")
            continue
        problems.append(f"created {path!r}")
    lock = str(SESSIONS / "sessions.json.lock")
    if lock in after and lock not in before:
        problems.append(f"{lock} is left (OpenClaw waits for it, then deletes it)")
    for path in sorted(before.keys() - after.keys()):
        if path == str(SESSIONS / "sessions.json"):
            problems.append("the store file is gone")
        elif len(archives_of(path)) != 1:
            problems.append(f"removed {path!r} (archives: {archives_of(path)!r})")
    for path in sorted(before.keys() & after.keys()):
        if path.startswith(("orchestrator", "bindings/")) or before[path] == after[path]:
            continue
        name = path.removeprefix(prefix)
        if path == str(SESSIONS / "sessions.json"):
            continue
        kept_name = path.startswith(prefix) and name in new_files and len(archives_of(path)) == 1
        if not kept_name or not after[path][3].startswith(b'{"type":"session"'):
            problems.append(f"changed {path!r}")  # a kept name must be archived, then a header
    return problems


# -- probes -------------------------------------------------------------------------------------


def nothing(world: World) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Probe:
    """One hostile request: the world's preparation, the command, the output mode."""

    name: str
    command: str
    key: str
    prepare: Callable[[World], None] = nothing
    json: bool = True
    #: Exit codes a defined answer may have (0 ok, 1 failed run, 2 refused).
    codes: frozenset[int] = frozenset({0, 2})


@dataclass(slots=True)
class Outcome:
    probe: Probe
    code: int
    problems: list[str] = field(default_factory=list)


def run_probe(template: Path, root: Path, probe: Probe) -> Outcome:
    world = make_world(template, root)
    probe.prepare(world)
    outside_before = snapshot(world.root, skip=world.state)
    before = snapshot(world.state)
    store_before = world.store()
    key = world.expand(probe.key)
    touched = targets(world, key)
    argv = [probe.command, key] + (["--json"] if probe.json else [])
    ran = cli(world, *argv)
    outcome = Outcome(probe, ran.code)
    if ran.code not in probe.codes:
        outcome.problems.append(f"exit {ran.code}: {ran.err.strip()!r:.300}")
    outcome.problems += output_problems(ran, json=probe.json)
    outcome.problems += [
        f"outside the state directory: {c}"
        for c in diff(outside_before, snapshot(world.root, skip=world.state))
    ]
    outcome.problems += state_problems(world, before, store_before, touched)
    return outcome


def key_probes() -> list[Probe]:
    """Hostile keys, for reset and delete."""
    keys = {
        "dot-dot": "..",
        "traversal": "agent:main:../../../../outside",
        "agent traversal": "agent:../../..:main",
        "absolute": "{outside}",
        "slash": "agent:main:a/b/../../c",
        "backslash": "agent:main:..\\..\\outside",
        "fullwidth": fullwidth("agent:main:main"),
        "fullwidth dots": "agent:main:" + fullwidth("../../outside"),
        "cyrillic lookalike": "agent:main:main".replace("a", CYRILLIC_A),
        "cyrillic agent": f"agent:m{CYRILLIC_A}in:main",
        "129 chars": "agent:main:" + "x" * 129,
        "600 chars": "x" * 600,
        "crlf": "agent:main:a\r\nb",
        "trailing newline": "agent:main:telegram:direct:42\n",
        "ansi escape": "agent:main:\x1b[31mred\x1b[0m",
        "right-to-left override": "agent:main:\u202eevil",
        "c1 csi": "agent:main:\x9b31m",
        "next line (NEL)": "agent:main:a\x85b",
        "line separator": "agent:main:a\u2028b",
    }
    probes = [
        Probe(f"key {name} ({command})", command, key)
        for name, key in keys.items()
        for command in ("reset", "delete")
    ]
    # Human output where the key itself is what gets printed.
    display = [
        "crlf",
        "ansi escape",
        "right-to-left override",
        "c1 csi",
        "next line (NEL)",
        "line separator",
    ]
    chosen = keys if SOAK else {name: keys[name] for name in display}
    probes += [
        Probe(f"key {name} ({command}, human)", command, key, json=False)
        for name, key in chosen.items()
        for command in ("reset", "delete")
    ]
    return probes


def planted(
    name: str, data: bytes = b'{"type":"session","id":"planted"}\nplanted\n'
) -> Callable[[World], None]:
    """A file of that name in the sessions directory."""

    def plant(world: World) -> None:
        (world.sessions / name).write_bytes(data)

    return plant


def stored(
    key: str, field_: str, value: str, *then: Callable[[World], None]
) -> Callable[[World], None]:
    """The entry ``key`` with ``field_`` set to ``value`` (placeholders expanded)."""

    def prepare(world: World) -> None:
        for step in then:
            step(world)
        world.set_fields(key, **{field_: world.expand(value)})

    return prepare


def store_probes() -> list[Probe]:
    """Hostile session ids and sessionFile values in the store, for reset and delete."""
    values: dict[str, tuple[str, str, tuple[Callable[[World], None], ...]]] = {
        "id dot-dot": ("sessionId", "../../../../outside", ()),
        "id absolute": ("sessionId", "{outside}", ()),
        "id slash": ("sessionId", "a/b", ()),
        "id backslash": ("sessionId", "..\\..\\outside", ()),
        "id NUL": ("sessionId", "a\x00b", ()),
        "id fullwidth": ("sessionId", fullwidth("abc"), ()),
        "id cyrillic": ("sessionId", f"{CYRILLIC_A}bc", ()),
        "id 129 chars": ("sessionId", "a" * 129, ()),
        "id crlf": ("sessionId", "a\r\nb", ()),
        "id ansi": ("sessionId", "\x1b[31mx", ()),
        "id rlo": ("sessionId", "\u202ex", ()),
        "file dot-dot": ("sessionFile", "../../../../outside.jsonl", ()),
        "file absolute": ("sessionFile", "{abs_target}", ()),
        "file through sub": ("sessionFile", "sub/../../../../../outside.jsonl", ()),
        "file NUL": ("sessionFile", "a\x00b.jsonl", ()),
        "file backslash": ("sessionFile", "..\\..\\..\\..\\outside.jsonl", ()),
        "file fullwidth dots": ("sessionFile", fullwidth("../../../../") + "outside.jsonl", ()),
        "file 300 chars": ("sessionFile", "f" * 300 + ".jsonl", ()),
        "file a directory outside": ("sessionFile", "{elsewhere}", ()),
        "file the sessions dir": ("sessionFile", "{sessions}", ()),
        "file crlf name": ("sessionFile", "evil\r\n.jsonl", (planted("evil\r\n.jsonl"),)),
        "file ansi name": ("sessionFile", "\x1b[31mred.jsonl", (planted("\x1b[31mred.jsonl"),)),
        "file rlo name": ("sessionFile", "\u202elnosj.txt", (planted("\u202elnosj.txt"),)),
        "file the store": ("sessionFile", "sessions.json", ()),
        "file the store lock": ("sessionFile", "sessions.json.lock", ()),
        "file symlink out": ("sessionFile", "link.jsonl", (symlink("link.jsonl", "{outside}"),)),
    }
    probes = []
    for name, (field_, value, then) in values.items():
        for command, key, probe_key in (("reset", MAIN, "main"), ("delete", TELEGRAM, TELEGRAM)):
            prepare = stored(key, field_, value, *then)
            probes.append(Probe(f"{name} ({command})", command, probe_key, prepare))
    # Human output of a delete lists the archived paths: names from the store.
    for name in ("file crlf name", "file ansi name", "file rlo name"):
        field_, value, then = values[name]
        prepare = stored(TELEGRAM, field_, value, *then)
        probes.append(Probe(f"{name} (delete, human)", "delete", TELEGRAM, prepare, json=False))
    return probes


def symlink(name: str, target: str) -> Callable[[World], None]:
    """A symlink ``name`` in the sessions directory, to ``target`` (placeholders expanded)."""

    def plant(world: World) -> None:
        (world.sessions / name).symlink_to(world.expand(target))

    return plant


def id_symlink_out(world: World) -> None:
    """The target's ``<sessionId>.jsonl`` is a symlink to a file outside."""
    sid = world.store()[MAIN]["sessionId"]
    (world.sessions / f"{sid}.jsonl").unlink()
    (world.sessions / f"{sid}.jsonl").symlink_to(world.outside)
    world.set_fields(MAIN, sessionFile=f"{sid}.jsonl")


def legacy_dir_symlinked_out(world: World) -> None:
    """``<state>/sessions`` (the legacy transcript directory) is a symlink to a directory
    outside holding a transcript named like the target's."""
    sid = world.store()[MAIN]["sessionId"]
    (world.elsewhere / f"{sid}.jsonl").write_bytes(b'{"type":"session"}\nlegacy, outside\n')
    (world.state / "sessions").symlink_to(world.elsewhere, target_is_directory=True)


def bindings_dir_symlinked_out(world: World) -> None:
    """``<state>/bindings`` is a symlink to a directory outside (with the bindings file)."""
    real = world.root / "bindings-outside"
    shutil.move(str(world.state / "bindings"), real)
    (world.state / "bindings").symlink_to(real, target_is_directory=True)


def farewells_symlinked_out(world: World) -> None:
    """``<state>/bindings/farewells.jsonl`` is a symlink to a file outside."""
    (world.state / "bindings" / "farewells.jsonl").symlink_to(world.outside)


def file_probes() -> list[Probe]:
    """Symlinks the workflow meets on its way (not at the sessions directory itself)."""
    return [
        Probe("transcript id symlinked out (reset)", "reset", "main", id_symlink_out),
        Probe(
            "legacy sessions dir symlinked out (reset)", "reset", "main", legacy_dir_symlinked_out
        ),
        Probe("bindings dir symlinked out (reset)", "reset", "main", bindings_dir_symlinked_out),
        Probe("farewell log symlinked out (reset)", "reset", "main", farewells_symlinked_out),
    ]


def run_all(template: Path, root: Path, probes: list[Probe]) -> list[Outcome]:
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(
            pool.map(
                lambda item: run_probe(template, root / f"p{item[0]}", item[1]),
                enumerate(probes),
            )
        )


def failures(outcomes: Iterable[Outcome]) -> list[str]:
    return [f"{o.probe.name}: {p}" for o in outcomes for p in o.problems]


# -- the tests ------------------------------------------------------------------------------------


PROBE_GROUPS: dict[str, Callable[[], list[Probe]]] = {
    "keys": key_probes,
    "store data": store_probes,
    "symlinks on the way": file_probes,
}


@pytest.mark.parametrize("group", list(PROBE_GROUPS))
def test_hostile_input(template: Path, tmp_path: Path, group: str) -> None:
    """Traversal, NUL, separators, look-alikes, long names, CR/LF and escapes in keys, ids
    and sessionFile, symlinks on the workflow's way: refused, or handled with nothing
    outside the state directory touched, the store intact, one line of output."""
    began = time.monotonic()
    probes = PROBE_GROUPS[group]()
    outcomes = run_all(template, tmp_path, probes)
    problems = failures(outcomes)
    if group == "keys":
        problems += nul_key_problems(template, tmp_path / "nul")
    codes = sorted({o.code for o in outcomes})
    report(
        f"hostile input: {group}",
        probes=len(probes) + (2 if group == "keys" else 0),
        human_output=sum(not p.json for p in probes),
        exit_codes={c: sum(o.code == c for o in outcomes) for c in codes},
        problems=len(problems),
        seconds=round(time.monotonic() - began, 1),
    )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def nul_key_problems(template: Path, root: Path) -> list[str]:
    """A NUL in a key (no argument can carry one): the service refuses it, touching nothing."""
    world = make_world(template, root)
    before = snapshot(world.root)
    problems = []
    for command in ("reset", "delete"):

        async def ask(command: str = command) -> dict[str, Any]:
            journal = await FileJournal.open(journal_dir(world.state))
            async with open_engine(journal, clock=FakeClock()) as engine:
                service = SessionService(engine, LocalHost(world.state))
                if command == "reset":
                    return await service.reset("agent:main:a\x00b")
                return await service.delete("agent:main:a\x00b")

        reply = anyio.run(ask)
        if reply["ok"] or reply["error"]["code"] != "INVALID_REQUEST":
            problems.append(f"key with NUL ({command}): {reply}")
    problems += [f"key with NUL: {c}" for c in diff(before, snapshot(world.root))]
    return problems


def strings(value: object) -> Iterator[str]:
    """Every string inside a decoded JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_logs_stay_one_line_per_event(template: Path, tmp_path: Path) -> None:
    """Ids with CR/LF, ANSI escapes and a bidi override in the store reach the journal (the
    run's snapshot, its plans): ``runs list``/``runs show`` print printable lines, ``audit
    export`` one JSON record a line."""
    world = make_world(template, tmp_path / "world")
    hostile = "a\r\nb\x1b[31m\u202ec\x85"
    planted(f"{hostile}.jsonl")(world)
    world.set_fields(MAIN, sessionId=hostile, sessionFile=f"{hostile}.jsonl")
    ran = cli(world, "reset", "main", "--json")
    assert ran.code == 0 and not output_problems(ran, json=True), ran
    run_id = orjson.loads(ran.out)["run_id"]
    for argv in (["runs", "list"], ["runs", "show", run_id]):
        shown = cli(world, *argv)
        assert shown.code == 0, (argv, shown)
        odd = {c for c in shown.out + shown.err if not c.isprintable() and c != "\n"}
        assert not odd, (argv, odd, shown.out)
    exported = cli(world, "audit", "export")
    assert exported.code == 0, exported
    lines = exported.out.split("\n")
    records = [orjson.loads(line) for line in lines[:-1]]
    assert lines[-1] == "" and records
    # The hostile id did reach the journal (else this test would prove nothing).
    assert any(hostile in text for text in strings(records))


@pytest.mark.parametrize("parts", [SESSIONS, Path("agents/main"), Path("agents")])
def test_symlinked_sessions_directory_is_refused(
    template: Path, tmp_path: Path, parts: Path
) -> None:
    """A symlink at the sessions directory or above it (inside the state): exit 2, a
    one-line reason naming the symlink, nothing changed anywhere."""
    world = make_world(template, tmp_path / "world")
    real = world.root / "real"
    shutil.move(str(world.state / parts), real)
    (world.state / parts).symlink_to(real, target_is_directory=True)
    before = snapshot(world.root)
    for argv in (["reset", "main"], ["delete", TELEGRAM], ["reset", "main", "--json"]):
        ran = cli(world, *argv)
        assert ran.code == 2, (argv, ran)
        assert "symlink" in ran.out + ran.err, (argv, ran)
        assert not output_problems(ran, json="--json" in argv), (argv, ran)
    assert [c for c in diff(before, snapshot(world.root)) if "orchestrator" not in c] == []


FIXED_MS = 1_790_000_000_000


class FixedClockHost(LocalHost):
    """The local host with a fixed clock, so a test knows the archive names in advance."""

    def now_ms(self) -> int:
        return FIXED_MS


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("command", ["reset", "delete"])
def test_symlink_at_the_archive_target_is_not_followed(
    template: Path, tmp_path: Path, command: str, dangling: bool
) -> None:
    """A symlink where the old transcript is to be archived: neither followed nor replaced;
    the transcript stays (once), the symlink and its target are unchanged."""
    world = make_world(template, tmp_path / "world")
    key = MAIN if command == "reset" else TELEGRAM
    entry = world.store()[key]
    transcript = Path(entry["sessionFile"])
    old_bytes = transcript.read_bytes()
    reason = "reset" if command == "reset" else "deleted"
    target = archive_path(transcript, reason, FIXED_MS)
    victim = world.root / ("missing.jsonl" if dangling else "victim.jsonl")
    if not dangling:
        victim.write_bytes(b"victim, not yours\n")
    target.symlink_to(victim)
    outside = snapshot(world.root, skip=world.state)

    async def ask() -> dict[str, Any]:
        journal = await FileJournal.open(journal_dir(world.state))
        async with open_engine(journal, clock=FakeClock()) as engine:
            service = SessionService(engine, FixedClockHost(world.state))
            if command == "reset":
                return await service.reset("main")
            return await service.delete(TELEGRAM)

    reply = anyio.run(ask)
    assert reply["ok"], reply
    assert target.is_symlink() and os.readlink(target) == str(victim)
    assert diff(outside, snapshot(world.root, skip=world.state)) == []
    holders = [p for p in world.sessions.iterdir() if p.is_file() and not p.is_symlink()]
    assert [p.name for p in holders if p.read_bytes() == old_bytes] == [transcript.name]


def test_world_writable_state_directory_is_refused(template: Path, tmp_path: Path) -> None:
    """A state directory others may write (0777): anyone could swap its subdirectories for
    symlinks between the tool's checks and its writes. Like ssh's StrictModes, the tool
    refuses it (exit 2, one line saying so) and changes nothing, itself included."""
    world = make_world(template, tmp_path / "world")
    world.state.chmod(0o777)
    before = snapshot(world.root)
    ran = cli(world, "reset", "main", "--json")
    after = snapshot(world.root)
    report("world-writable state directory", exit=ran.code, output=(ran.out + ran.err)[:160])
    assert ran.code == 2, f"proceeded (exit {ran.code}): {ran.out}{ran.err}"
    assert "writable" in ran.out + ran.err
    assert diff(before, after) == []


#: Where the umask test kills the tool, to see files that exist only for a moment.
CRASH_POINTS = (
    "",  # run to the end
    "store.temp_written",  # the store lock and the store's temp file
    "header.temp_synced",  # the new transcript's temp file
    "store_lock.acquired#2",  # the bindings file's lock
    "bindings.temp_written",  # the bindings file's temp, the farewell log
)


def masked(text: str) -> str:
    """``text`` with ids, hashes and timestamps (runs of hex digits, ``T``, ``-``) as ``#``."""
    return re.sub(r"[0-9a-fT-]{6,}", lambda m: "#" if re.search(r"\d", m[0]) else m[0], text)


def loosen(world: World) -> None:
    """Modes an install may have (0644 files, 0755 directories), and a second agent with
    no sessions directory yet: what the tool creates is then told apart by its mode."""
    (world.state / "openclaw.json").write_bytes(
        b'{"agents": {"list": [{"id": "main", "default": true}, {"id": "ops"}]}}'
    )
    for dirpath, dirnames, filenames in os.walk(world.state):
        for name in dirnames:
            (Path(dirpath) / name).chmod(0o755)
        for name in filenames:
            (Path(dirpath) / name).chmod(0o644)


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask-000", "umask-022"])
def test_created_files_are_0600_and_directories_0700(
    template: Path, tmp_path: Path, umask: int
) -> None:
    """Under umask 000 and 022, every file the tool creates in the state directory (journal,
    locks, store, transcripts, bindings, farewells, temps) is 0600, every directory 0700.
    Files it only moves (archived transcripts) keep their mode."""
    seen: dict[str, int] = {}
    problems = []
    requests = (("reset", "main"), ("delete", TELEGRAM), ("reset", "agent:ops:dm"))
    for index, point in enumerate(CRASH_POINTS):
        for command, key in requests:
            if command == "delete" and point.startswith("header."):
                continue  # a delete writes no header
            if key == "agent:ops:dm" and point:
                continue  # a new agent's session: only its directories are of interest
            world = make_world(template, tmp_path / f"{command}-{index}-{key[:9]}")
            loosen(world)
            before = snapshot(world.state)
            # A moved file keeps its inode and bytes; a new file may reuse a freed inode.
            moved = {(entry[2], entry[3]) for entry in before.values()}
            env = {ENV_CRASH_AT: point} if point else {}
            ran = cli(world, command, key, env=env, shell=f"umask {umask:03o}")
            what = f"{command} {key} {point or '(complete)'}"
            if ran.code != (-9 if point else 0):
                problems.append(f"{what}: exit {ran.code} {ran.err!r:.200}")
            for path, (kind, mode, ino, data) in snapshot(world.state).items():
                if (ino, data) in moved:
                    continue  # there before (perhaps under another name)
                want = 0o700 if kind == "d" else 0o600
                seen[masked(path)] = mode
                if mode != want:
                    problems.append(f"{what}: {path} is {mode:04o}, not {want:04o}")
    report(
        f"modes under umask {umask:03o}",
        kill_points=len(CRASH_POINTS),
        created=", ".join(f"{path} {mode:04o}" for path, mode in sorted(seen.items())),
    )
    assert not problems, "\n".join(problems)
