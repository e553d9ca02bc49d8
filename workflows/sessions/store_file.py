"""An OpenClaw ``sessions.json``, read strictly and rewritten without disturbing other entries.

The file is one JSON object ``{sessionKey: entry}``, 2-space indented by OpenClaw. Entries are
kept as raw JSON bytes (``msgspec.Raw``), so an entry this tool does not change is written back
byte for byte, unknown fields and number spellings included; only the entry a workflow sets is
re-encoded (the way ``JSON.stringify(store, null, 2)`` would lay it out).

An empty, unparsable or non-object file is ``CorruptFile``: never read as ``{}``, which is how
OpenClaw loses every other session (#77783).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson

from orchestrator import file_ops
from orchestrator.errors import CorruptFile

__all__ = ("StoreConflict", "StoreDoc", "encode_entry", "parse_store", "read_store")

_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


class StoreConflict(Exception):
    """The stored session is not the one a reset or delete expected: nothing is written."""


class StoreDoc:
    """The store's entries in file order; untouched entries stay raw bytes."""

    def __init__(self, members: dict[str, msgspec.Raw | dict[str, Any]], newline: bool) -> None:
        self._members = members
        self._newline = newline
        #: Whether ``set`` or ``delete`` changed anything (a store is rewritten only then).
        self.changed = False

    @classmethod
    def empty(cls) -> StoreDoc:
        return cls({}, False)

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry under ``key`` as a dict (None if absent or not an object)."""
        value = self._members.get(key)
        if value is None:
            return None
        if isinstance(value, msgspec.Raw):
            decoded = msgspec.json.decode(value)
            return decoded if isinstance(decoded, dict) else None
        return value

    def set(self, key: str, entry: dict[str, Any]) -> None:
        self._members[key] = entry
        self.changed = True

    def delete(self, key: str) -> None:
        if self._members.pop(key, None) is not None:
            self.changed = True

    def encode(self) -> bytes:
        if not self._members:
            return b"{}\n" if self._newline else b"{}"
        parts = []
        for key, value in self._members.items():
            text = bytes(value) if isinstance(value, msgspec.Raw) else encode_entry(value)
            parts.append(b"  " + orjson.dumps(key) + b": " + text)
        return b"{\n" + b",\n".join(parts) + (b"\n}\n" if self._newline else b"\n}")


def encode_entry(entry: dict[str, Any]) -> bytes:
    """``entry`` as it sits one level deep in a 2-space indented object."""
    return orjson.dumps(entry, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n  ")


def read_store(path: Path) -> StoreDoc:
    """The store at ``path``; an empty store if the file does not exist.

    Raises ``CorruptFile`` for an unreadable, empty, unparsable or non-object file.
    """
    try:
        data = file_ops().read(path)
    except FileNotFoundError:
        return StoreDoc.empty()
    except OSError as exc:
        raise CorruptFile(path, exc.strerror or str(exc)) from exc
    return parse_store(data, path)


def parse_store(data: bytes, path: Path) -> StoreDoc:
    """A store from the bytes of ``path``; ``CorruptFile`` unless they are a JSON object."""
    if not data.strip():
        raise CorruptFile(path, "the file is empty (a crash may have cut it)")
    try:
        data.decode("utf-8")  # raw entries are not decoded up front, so check the text here
    except UnicodeDecodeError as exc:
        raise CorruptFile(path, f"not UTF-8 text (byte {exc.start})") from None
    try:
        members: dict[str, msgspec.Raw | dict[str, Any]] = dict(_decoder.decode(data))
    except msgspec.DecodeError as exc:
        raise CorruptFile(path, f"not a JSON object of sessions ({exc})") from None
    return StoreDoc(members, data.endswith(b"\n"))
