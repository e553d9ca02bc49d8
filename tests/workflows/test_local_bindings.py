"""The local host's thread bindings (``LocalBindings``): what an unbind touches."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson

from workflows.sessions.adapters.local import LocalBindings

KEY = "agent:main:main"


def unbind(bindings: LocalBindings) -> list[str]:
    return anyio.run(lambda: bindings.unbind(KEY, kind="acp", reason="reset", farewell_id="f"))


def test_no_bindings_file_means_nothing_is_touched(tmp_path: Path) -> None:
    """Without a bindings file there is nothing to release: no directory is made and no
    lock taken (a reset on an install without thread bindings pays no fsync for it)."""
    assert unbind(LocalBindings(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


def test_a_binding_is_released_with_one_farewell(tmp_path: Path) -> None:
    bindings = LocalBindings(tmp_path)
    bindings.dir.mkdir()
    doc = {"bindings": [{"targetSessionKey": KEY, "threadId": "t-1"}]}
    bindings.path.write_bytes(orjson.dumps(doc))
    assert unbind(bindings) == ["t-1"]
    assert unbind(bindings) == []  # asked again (a resumed step): no second farewell
    assert orjson.loads(bindings.path.read_bytes()) == {"bindings": []}
    lines = bindings.farewells.read_bytes().splitlines()
    assert [orjson.loads(line)["threadId"] for line in lines] == ["t-1"]
    assert sorted(p.name for p in bindings.dir.iterdir()) == [
        "farewells.jsonl",
        "thread-bindings.json",
    ]
