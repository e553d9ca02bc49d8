"""``orchestrator journal verify``: check a state directory's journal, and repair a torn tail.

One line per journal file and a summary (or one JSON document with ``--json``). Exit 0 when
nothing is corrupt (a torn tail alone is what a crash leaves, not corruption), 3 when a file
is corrupt or of another format version, 2 when a file cannot be read. Without ``--repair``
nothing changes; with it the torn tails of dead writers' files are cut (the bytes kept as
``<file>.<offset>.broken``) and nothing else is touched.
"""

from __future__ import annotations

import argparse
from collections import Counter

from ._registry import Command
from ._runs_text import printable
from ._verify import FileVerdict, Repair, Status, Verification, repair_journal, verify_journal

__all__ = ("journal_commands",)

_SUMMARY_WORDS: dict[Status, str] = {
    "clean": "clean",
    "torn_tail": "torn tail",
    "corrupt": "corrupt",
    "version_mismatch": "other format version",
    "live": "being written",
    "unreadable": "unreadable",
}


def journal_commands() -> list[Command]:
    verify = Command(
        "verify",
        "check every journal file; --repair cuts torn tails",
        _configure_verify,
        _cmd_verify,
        description="Check every journal file of the state directory: clean, a torn tail "
        "(what a crash mid-write leaves; not corruption), corrupt (a bad record followed by "
        "valid ones: exit 3, nothing is resumed), another format version (exit 3), or still "
        "being written by a live process. Changes nothing unless --repair is given.",
    )
    return [
        Command("journal", "check and repair the journal", _no_options, None, subcommands=[verify])
    ]


def _no_options(parser: argparse.ArgumentParser) -> None:
    return None


def _configure_verify(parser: argparse.ArgumentParser) -> None:
    from .cli import add_common_options

    parser.add_argument(
        "--repair",
        action="store_true",
        help="cut the torn tails of files whose writer is dead, keeping the bytes as "
        "<file>.<offset>.broken; corrupt files are never touched",
    )
    add_common_options(parser)


async def _cmd_verify(args: argparse.Namespace) -> int:
    from .cli import emit_json, journal_dir

    directory = journal_dir(args.state_dir)
    result = await repair_journal(directory) if args.repair else verify_journal(directory)
    if args.json:
        emit_json(result.to_json())
    else:
        _print(result)
    return exit_code(result)


def exit_code(result: Verification) -> int:
    """3: corrupt or another format version; 2: a file cannot be read; else 0."""
    if result.corrupt:
        return 3
    return 2 if result.unreadable else 0


# -- human output ------------------------------------------------------------------------


def _print(result: Verification) -> None:
    if not result.files:
        print(f"no journal files in {printable(str(result.directory))}: nothing to verify")
        return
    print(f"journal {printable(str(result.directory))}:")
    cuts = {r.path: r for r in result.repaired}
    for verdict in result.files:
        print(f"  {printable(verdict.path.name)}: {describe(verdict)}")
        if verdict.path in cuts:
            print(f"    {_repaired(cuts[verdict.path])}")
    print(_summary(result))
    for advice in _advice(result):
        print(advice)


def describe(verdict: FileVerdict) -> str:
    """One phrase for a file's verdict, e.g. ``torn tail at byte 96 (bad checksum), 12 bytes``."""
    records = _records(verdict.records)
    reason = printable(verdict.reason or "")  # may quote bytes of the file
    if verdict.status == "clean":
        return f"clean, {records}"
    if verdict.status == "torn_tail":
        return (
            f"torn tail at byte {verdict.offset} ({reason}), "
            f"{_count(verdict.tail_bytes or 0, 'byte')}; {records} before it"
        )
    if verdict.status == "corrupt":
        return (
            f"CORRUPT at byte {verdict.offset} ({reason}), with valid records after "
            f"it; {records} before it"
        )
    if verdict.status == "version_mismatch":
        return f"format version {verdict.version}, which this orchestrator does not read"
    if verdict.status == "live":
        return _live(verdict, records)
    return f"unreadable ({reason})"


def _live(verdict: FileVerdict, records: str) -> str:
    where = "written by a live process"
    if verdict.offset is None:
        return f"{where}, {records}"
    return (
        f"{where}, {records}; the {_count(verdict.tail_bytes or 0, 'byte')} at byte "
        f"{verdict.offset} are a write in progress, not damage"
    )


def _repaired(repair: Repair) -> str:
    return (
        f"repaired: cut at byte {repair.offset}, {_count(repair.bytes, 'byte')} kept in "
        f"{printable(repair.kept_as.name)}"
    )


def _summary(result: Verification) -> str:
    counts = Counter(f.status for f in result.files)
    parts = [f"{counts[s]} {word}" for s, word in _SUMMARY_WORDS.items() if counts[s]]
    if result.repaired:
        parts.append(f"{len(result.repaired)} cut")
    return f"{_count(len(result.files), 'file')}: {', '.join(parts)}; journal {_state(result)}"


def _state(result: Verification) -> str:
    if result.corrupt:
        return "CORRUPT"
    if result.unreadable:
        return "not fully readable"
    return "clean" if result.clean else "not corrupt (a torn tail only)"


def _advice(result: Verification) -> list[str]:
    lines: list[str] = []
    cut = {r.path for r in result.repaired}
    if any(f.status == "torn_tail" and f.path not in cut for f in result.files):
        lines.append(
            "a torn tail is what a crash in the middle of a write leaves, not corruption: the "
            "records before it are intact. 'orchestrator journal verify --repair' (or the next "
            "run or 'orchestrator recover') cuts it and keeps the bytes as <file>.<offset>.broken"
        )
    statuses = {f.status for f in result.files}
    if "corrupt" in statuses:
        lines.append(
            "corruption: a bad record is followed by valid ones, so nothing is resumed from "
            "the journal. Keep a copy of the files marked CORRUPT; --repair never touches "
            "them. Move a file aside only once its runs are accounted for"
        )
    if "version_mismatch" in statuses:
        lines.append(
            "a file of another format version is not read: use the orchestrator release that "
            "wrote it, or move the file aside; --repair never touches it"
        )
    if result.unreadable:
        lines.append("a file could not be read: check its permissions, then verify again")
    return lines


def _records(count: int | None) -> str:
    return "records unknown" if count is None else _count(count, "record")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"
