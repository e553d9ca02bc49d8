"""The journal as JSON Lines for auditors (``orchestrator audit export``), and back.

One record a line, runs in the order they started, each run's records in ``seq`` order. A line
is a JSON object whose keys are the record struct's own field names (every field, defaults
included) after the tag field ``"record"`` (``run_started``, ``step_finished``, ...), so the
export is lossless: ``read_export`` turns it back into the very records of the journal.
Values a workflow stored that JSON cannot hold as such (bytes, non-string map keys) are
written as msgspec writes them to JSON (base64 text, string keys).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from ._journal.history import RunHistory
from ._journal.records import Record
from ._views import last_activity, ordered
from .errors import UsageError

__all__ = ("TAG_FIELD", "decode_line", "encode_record", "export_jsonl", "read_export")

TAG_FIELD = "record"
_FIRST = ("run_id", "seq", "at")


def encode_record(record: Record) -> bytes:
    """One export line (with its newline): ``{"record": tag, "run_id", "seq", "at", ...}``."""
    config = record.__struct_config__
    fields: dict[str, Any] = {TAG_FIELD: config.tag}
    for name in _FIRST + tuple(f for f in record.__struct_fields__ if f not in _FIRST):
        fields[name] = getattr(record, name)
    return orjson.dumps(msgspec.to_builtins(fields), option=orjson.OPT_NON_STR_KEYS) + b"\n"


def export_jsonl(
    histories: Iterable[RunHistory],
    *,
    since: float | None = None,
    tick: Callable[[], None] = lambda: None,
) -> tuple[bytes, int, int]:
    """(the export, records, runs) of ``histories``, runs in start order.

    ``since``: only runs with a record at or after that time, each with all its records (a run
    started earlier and resumed since is exported whole). ``tick`` is called once per run.
    """
    lines: list[bytes] = []
    runs = 0
    for history in ordered(histories):
        tick()
        if since is not None and last_activity(history) < since:
            continue
        runs += 1
        lines.extend(map(encode_record, history.records))
    return b"".join(lines), len(lines), runs


def decode_line(line: bytes | str) -> Record:
    """The record an export line holds; ``msgspec.ValidationError`` or ``orjson`` errors if none."""
    record: Record = msgspec.convert(orjson.loads(line), Record)
    return record


def read_export(path: Path | str) -> list[Record]:
    """Every record of an ``audit export`` file, in file order."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the export {path}: {exc.strerror or exc}") from exc
    records: list[Record] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(decode_line(line))
        except (orjson.JSONDecodeError, msgspec.ValidationError) as exc:
            raise UsageError(
                f"{path} line {number} is not an audit record ({exc}); "
                "was it written by 'orchestrator audit export'?"
            ) from None
    return records
