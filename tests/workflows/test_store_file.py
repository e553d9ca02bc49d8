"""The sessions.json store: strict reads, and rewrites that leave other entries byte-for-byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.errors import CorruptFile
from workflows.sessions.store_file import StoreDoc, encode_entry, parse_store, read_store

#: Entries as OpenClaw (or a person editing by hand) leaves them, each one level deep in a
#: 2-space indented object, with number spellings and fields no re-encoding would keep.
ENTRIES: dict[str, bytes] = {
    "agent:main:main": b"""{
    "sessionId": "3f1c2b9e-5d4a-4c1e-9a7b-1e2d3c4b5a69",
    "updatedAt": 1773806538203,
    "systemSent": true,
    "contextTokens": 1e3,
    "cacheRead": 1.50,
    "delta": -0,
    "big": 12345678901234567890123,
    "ratio": 0.1000,
    "myPluginField": {"nested": [1, 2.0, 3E+2], "empty": {}, "list": []}
  }""",
    "agent:main:discord:group:d\xc3\xa9v": b"""{
    "sessionId": "abc",
    "label": "Caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x90\x99",
    "escaped": "\\u00e9\\n\\t\\"quoted\\"\\/",
    "lastTo": "channel:\\u2028",
    "deliveryContext": {
      "channel": "discord",
      "to": "channel:1"
    }
  }""",
    "agent:ops:subagent:7": b"""{
    "sessionId": "def",
    "spawnDepth": 1,
    "n": [
      1e-7,
      -1.0E5,
      100
    ],
    "nul": null
  }""",
    "agent:ops:cron:job:run:1": b'{"sessionId": "compact", "updatedAt": 5}',
    "Agent:Main:MAIN": b"""{
    "sessionId": "legacy",
    "updatedAt": 1
  }""",
}

NEW_ENTRY: dict[str, Any] = {
    "sessionId": "9b8a7c6d-1e2f-4a3b-8c5d-6e7f8a9b0c1d",
    "updatedAt": 1773806600000,
    "systemSent": False,
    "deliveryContext": {"channel": "discord", "to": "channel:1"},
    "cliSessionIds": {},
    "tags": [],
    "label": "Café ☕",
    "ratio": 1.5,
}


def _key(k: str) -> str:
    return k.encode("latin-1").decode()  # the ENTRIES keys are written as UTF-8 bytes


def _store_bytes(entries: dict[str, bytes], newline: bool) -> bytes:
    """A store laid out the way ``JSON.stringify(store, null, 2)`` does."""
    parts = [b"  " + orjson.dumps(_key(k)) + b": " + v for k, v in entries.items()]
    return b"{\n" + b",\n".join(parts) + (b"\n}\n" if newline else b"\n}")


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "sessions.json"
    path.write_bytes(data)
    return path


# --- read_store ---------------------------------------------------------------------------


def test_missing_store_is_empty(tmp_path: Path) -> None:
    doc = read_store(tmp_path / "sessions.json")
    assert len(doc) == 0 and list(doc) == [] and doc.changed is False
    assert doc.encode() == b"{}"
    assert not (tmp_path / "sessions.json").exists()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"\n\n\t ",
        b"[]",
        b"[{}]",
        b"null",
        b"42",
        b'"sessions"',
        b"{oops",
        b'{\n  "agent:main:main": {\n    "sessionId": "abc",\n    "updat',
        b'{"a": {}',
        b'{"a": {}} trailing',
        b'{"a": {},}',
        b"{'a': {}}",
        b'{\n  // comment\n  "a": {}\n}',
        b"\x00\x00\x00\x00",
        b'{"a": "\xff"}',
        b'{"a": 1}\n{"b": 2}',
    ],
)
def test_corrupt_store_is_refused_and_left_alone(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(CorruptFile) as caught:
        read_store(path)
    assert caught.value.path == path
    assert path.read_bytes() == data, "a corrupt store must never be rewritten"
    assert [p.name for p in tmp_path.iterdir()] == ["sessions.json"]


def test_unreadable_store_is_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.mkdir()
    with pytest.raises(CorruptFile):
        read_store(path)


@pytest.mark.parametrize("newline", [False, True])
def test_read_store_keeps_file_order_and_values(tmp_path: Path, newline: bool) -> None:
    path = _write(tmp_path, _store_bytes(ENTRIES, newline))
    doc = read_store(path)
    assert list(doc) == [_key(k) for k in ENTRIES]
    assert len(doc) == len(ENTRIES)
    assert _key("agent:main:discord:group:d\xc3\xa9v") in doc and "missing" not in doc
    main = doc.get("agent:main:main")
    assert main is not None
    assert main["contextTokens"] == 1000 and main["cacheRead"] == 1.5
    assert main["myPluginField"] == {"nested": [1, 2.0, 300.0], "empty": {}, "list": []}
    dev = doc.get(_key("agent:main:discord:group:d\xc3\xa9v"))
    assert dev is not None and dev["escaped"] == 'é\n\t"quoted"/'
    assert dev["label"] == "Café ☕ 🐙"
    assert doc.get("missing") is None
    assert doc.changed is False


@pytest.mark.parametrize("newline", [False, True])
def test_untouched_store_encodes_to_its_own_bytes(tmp_path: Path, newline: bool) -> None:
    data = _store_bytes(ENTRIES, newline)
    doc = read_store(_write(tmp_path, data))
    for key in doc:
        doc.get(key)  # reading does not change anything
    assert doc.changed is False
    assert doc.encode() == data


def test_get_of_a_non_object_entry_is_none(tmp_path: Path) -> None:
    doc = read_store(_write(tmp_path, b'{\n  "a": 1,\n  "b": [],\n  "c": null,\n  "d": {}\n}'))
    assert [doc.get(k) for k in "abcd"] == [None, None, None, {}]
    assert list(doc) == ["a", "b", "c", "d"]


def test_get_returns_a_copy_of_a_raw_entry(tmp_path: Path) -> None:
    data = _store_bytes(ENTRIES, False)
    doc = read_store(_write(tmp_path, data))
    entry = doc.get("agent:main:main")
    assert entry is not None
    entry["sessionId"] = "mutated"
    assert doc.changed is False and doc.encode() == data


# --- the key property: set/delete leave every other entry byte-for-byte --------------------


@pytest.mark.parametrize("newline", [False, True])
@pytest.mark.parametrize("target", list(ENTRIES))
def test_set_one_entry_keeps_the_others_byte_for_byte(
    tmp_path: Path, target: str, newline: bool
) -> None:
    data = _store_bytes(ENTRIES, newline)
    doc = read_store(_write(tmp_path, data))
    doc.set(_key(target), NEW_ENTRY)
    assert doc.changed is True
    out = doc.encode()

    expected = _store_bytes(
        {k: (encode_entry(NEW_ENTRY) if k == target else v) for k, v in ENTRIES.items()}, newline
    )
    assert out == expected
    for key, raw in ENTRIES.items():
        if key != target:
            line = b"  " + orjson.dumps(_key(key)) + b": " + raw
            assert line in out, f"entry {_key(key)!r} changed"
    assert out.endswith(b"\n") is newline, "trailing newline presence is preserved"
    parsed = orjson.loads(out)
    assert list(parsed) == [_key(k) for k in ENTRIES], "order kept, set entry in place"
    assert parsed[_key(target)] == NEW_ENTRY
    reread = parse_store(out, tmp_path / "sessions.json")
    assert reread.get(_key(target)) == NEW_ENTRY
    assert tmp_path.joinpath("sessions.json").read_bytes() == data, "encode writes nothing"


@pytest.mark.parametrize("newline", [False, True])
@pytest.mark.parametrize("target", list(ENTRIES))
def test_delete_one_entry_keeps_the_others_byte_for_byte(
    tmp_path: Path, target: str, newline: bool
) -> None:
    doc = read_store(_write(tmp_path, _store_bytes(ENTRIES, newline)))
    doc.delete(_key(target))
    assert doc.changed is True
    assert _key(target) not in doc
    out = doc.encode()
    rest = {k: v for k, v in ENTRIES.items() if k != target}
    assert out == _store_bytes(rest, newline)
    assert list(orjson.loads(out)) == [_key(k) for k in rest]


@pytest.mark.parametrize("newline", [False, True])
def test_set_a_new_key_appends_it(tmp_path: Path, newline: bool) -> None:
    doc = read_store(_write(tmp_path, _store_bytes(ENTRIES, newline)))
    doc.set("agent:main:new", NEW_ENTRY)
    out = doc.encode()
    assert out == _store_bytes({**ENTRIES, "agent:main:new": encode_entry(NEW_ENTRY)}, newline)
    assert list(orjson.loads(out))[-1] == "agent:main:new"


def test_set_and_delete_together(tmp_path: Path) -> None:
    """A reset's commit: the canonical key set, its aliases pruned."""
    doc = read_store(_write(tmp_path, _store_bytes(ENTRIES, False)))
    doc.set("agent:main:main", NEW_ENTRY)
    doc.delete("Agent:Main:MAIN")
    rest = {k: v for k, v in ENTRIES.items() if k != "Agent:Main:MAIN"}
    rest["agent:main:main"] = encode_entry(NEW_ENTRY)
    assert doc.encode() == _store_bytes(rest, False)


def test_delete_of_a_missing_key_changes_nothing(tmp_path: Path) -> None:
    data = _store_bytes(ENTRIES, True)
    doc = read_store(_write(tmp_path, data))
    doc.delete("agent:main:nope")
    assert doc.changed is False
    assert doc.encode() == data


@pytest.mark.parametrize(("newline", "expected"), [(False, b"{}"), (True, b"{}\n")])
def test_deleting_every_entry(tmp_path: Path, newline: bool, expected: bytes) -> None:
    doc = read_store(_write(tmp_path, _store_bytes(ENTRIES, newline)))
    for key in list(doc):
        doc.delete(key)
    assert doc.changed is True and len(doc) == 0
    assert doc.encode() == expected


@pytest.mark.parametrize(("data", "newline"), [(b"{}", False), (b"{}\n", True), (b" {} ", False)])
def test_empty_object_store(tmp_path: Path, data: bytes, newline: bool) -> None:
    doc = read_store(_write(tmp_path, data))
    assert len(doc) == 0 and doc.changed is False
    doc.set("agent:main:main", {"sessionId": "x"})
    out = doc.encode()
    assert out == b'{\n  "agent:main:main": {\n    "sessionId": "x"\n  }\n}' + (
        b"\n" if newline else b""
    )


def test_new_store_from_nothing(tmp_path: Path) -> None:
    doc = StoreDoc.empty()
    doc.set("agent:main:main", {"sessionId": "x", "n": 1})
    assert doc.changed is True
    assert orjson.loads(doc.encode()) == {"agent:main:main": {"sessionId": "x", "n": 1}}


# --- encode_entry: JSON.stringify(entry, null, 2) one level deep -------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({}, b"{}"),
        ({"a": 1}, b'{\n    "a": 1\n  }'),
        (
            {"a": {"b": [1, "x"], "c": {}, "d": []}, "e": None, "f": True, "g": 1.5},
            b'{\n    "a": {\n      "b": [\n        1,\n        "x"\n      ],\n      "c": {},\n'
            b'      "d": []\n    },\n    "e": null,\n    "f": true,\n    "g": 1.5\n  }',
        ),
        ({"s": "line\nbreak \u00e9 \U0001f419"}, '{\n    "s": "line\\nbreak é 🐙"\n  }'.encode()),
    ],
)
def test_encode_entry_matches_json_stringify_layout(entry: dict[str, Any], expected: bytes) -> None:
    assert encode_entry(entry) == expected


def test_set_entry_round_trips_through_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, _store_bytes(ENTRIES, True))
    doc = read_store(path)
    doc.set("agent:ops:subagent:7", NEW_ENTRY)
    path.write_bytes(doc.encode())
    again = read_store(path)
    assert again.get("agent:ops:subagent:7") == NEW_ENTRY
    assert again.encode() == path.read_bytes()
