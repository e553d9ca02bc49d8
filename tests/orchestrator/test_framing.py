"""The journal's bytes: file header, frames, and how a scan tells a torn tail from corruption."""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator._journal.framing import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    decode_header,
    encode_frame,
    make_header,
    scan_frames,
)
from orchestrator._journal.records import (
    EffectApplied,
    EffectPlanned,
    ErrorInfo,
    Record,
    RunFinished,
    RunResumed,
    RunStarted,
    StepFinished,
    StepStarted,
)
from orchestrator.errors import JournalCorrupt, JournalVersionError

PATH = Path("/var/lib/orchestrator/journal/20250101T000000-1-abcd.jrnl")
SALT = bytes(range(16))
OTHER_SALT = bytes(range(100, 116))

# -- strategies -----------------------------------------------------------------------------

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
texts = st.text(max_size=20)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False)
common: dict[str, st.SearchStrategy[Any]] = {"run_id": texts, "seq": ints, "at": floats}

RECORD_STRATEGIES: dict[str, st.SearchStrategy[Record]] = {
    "run_started": st.builds(
        RunStarted,
        **common,
        workflow=texts,
        fingerprint=texts,
        key=texts,
        input=json_values,
        requested_by=texts,
        forced=st.dictionaries(texts, texts, max_size=3),
    ),
    "run_resumed": st.builds(RunResumed, **common, fingerprint=texts, requested_by=texts),
    "step_started": st.builds(StepStarted, **common, step=texts, attempt=ints),
    "step_finished": st.builds(
        StepFinished,
        **common,
        step=texts,
        attempt=ints,
        outcome=st.sampled_from(["ok", "timeout", "error"]),
        duration=floats,
        result=json_values,
        error=st.none() | st.builds(ErrorInfo, type=texts, message=texts),
        forced=st.booleans(),
    ),
    "effect_planned": st.builds(EffectPlanned, **common, step=texts, name=texts, value=json_values),
    "effect_applied": st.builds(
        EffectApplied, **common, step=texts, name=texts, detail=json_values
    ),
    "run_finished": st.builds(
        RunFinished,
        **common,
        status=st.sampled_from(["succeeded", "failed", "cancelled"]),
        step=st.none() | texts,
        code=st.none() | texts,
        message=st.none() | texts,
        result=json_values,
    ),
}
any_record = st.one_of(*RECORD_STRATEGIES.values())

# -- helpers --------------------------------------------------------------------------------


def _three_records() -> list[Record]:
    return [
        RunStarted(run_id="r1", seq=0, at=1.0, workflow="w", fingerprint="f", key="k"),
        StepStarted(run_id="r1", seq=1, at=2.0, step="a", attempt=1),
        StepFinished(
            run_id="r1",
            seq=2,
            at=3.0,
            step="a",
            attempt=1,
            outcome="error",
            duration=0.5,
            result={"rows": [1, 2, 3], "note": "x" * 40},
            error=ErrorInfo(type="ValueError", message="bad row"),
        ),
    ]


def _file(records: list[Record], salt: bytes = SALT) -> tuple[bytes, list[int]]:
    """A whole file's bytes and the offset of each frame."""
    header, used = make_header(salt)
    assert used == salt
    data, offsets = bytearray(header), []
    for record in records:
        offsets.append(len(data))
        data += encode_frame(record, salt)
    return bytes(data), offsets


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _header_with(version: int, salt: bytes = SALT, magic: bytes = MAGIC) -> bytes:
    """A header packed like ``make_header`` does, with a correct CRC."""
    body = struct.pack(">8sHH16s", magic, version, 0, salt)
    return body + struct.pack(">I", zlib.crc32(body))


def _strict(value: Any) -> bytes:
    """Bytes that differ when types differ (True vs 1, 1 vs 1.0), not just values."""
    return msgspec.msgpack.encode(value)


# -- round trip -----------------------------------------------------------------------------


def test_every_record_type_has_a_strategy() -> None:
    # The union in records.py is the source of truth: a new record type needs a strategy here.
    tags = {cls.__struct_config__.tag for cls in get_args(Record)}
    assert tags == set(RECORD_STRATEGIES)


@pytest.mark.parametrize("tag", sorted(RECORD_STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_each_record_type_round_trips(tag: str, data: st.DataObject) -> None:
    record = data.draw(RECORD_STRATEGIES[tag])
    file, offsets = _file([record])
    scan = scan_frames(file, SALT, PATH)
    assert scan.damage is None
    assert scan.end == len(file)
    assert len(scan.records) == 1
    offset, back = scan.records[0]
    assert offset == offsets[0] == HEADER_SIZE
    assert type(back) is type(record)
    assert back == record
    assert _strict(back) == _strict(record)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(any_record, min_size=1, max_size=6))
def test_mixed_records_round_trip_in_order(records: list[Record]) -> None:
    file, offsets = _file(records)
    scan = scan_frames(file, SALT, PATH)
    assert scan.damage is None
    assert scan.end == len(file)
    assert [offset for offset, _ in scan.records] == offsets
    assert [record for _, record in scan.records] == records
    assert [_strict(r) for _, r in scan.records] == [_strict(r) for r in records]


def test_empty_file_body_has_no_records_and_no_damage() -> None:
    header, _ = make_header(SALT)
    scan = scan_frames(header, SALT, PATH)
    assert scan.records == [] and scan.damage is None and scan.end == HEADER_SIZE


# -- torn and garbage tails -----------------------------------------------------------------


def test_truncation_at_every_offset_inside_the_last_record_is_a_torn_tail() -> None:
    records = _three_records()
    file, offsets = _file(records)
    last = offsets[2]
    assert len(file) - last > 60  # the sweep crosses the frame head and a real payload
    for cut in range(last + 1, len(file)):
        scan = scan_frames(file[:cut], SALT, PATH)
        assert [r for _, r in scan.records] == records[:2], cut
        assert [o for o, _ in scan.records] == offsets[:2], cut
        assert scan.end == last, cut
        assert scan.damage is not None, cut
        assert scan.damage.offset == last, cut
    # Cut exactly on the frame boundary: nothing is damaged.
    scan = scan_frames(file[:last], SALT, PATH)
    assert scan.damage is None and scan.end == last and len(scan.records) == 2


def _assert_tail_damage(file: bytes, tail: bytes, records: list[Record]) -> None:
    scan = scan_frames(file + tail, SALT, PATH)
    assert [r for _, r in scan.records] == records
    assert scan.end == len(file)
    assert scan.damage is not None
    assert scan.damage.offset == len(file)


@pytest.mark.parametrize("size", [1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 100, 1000, 4095, 4096])
@pytest.mark.parametrize("kind", ["random", "zeros"])
def test_garbage_after_valid_records_is_a_tail(size: int, kind: str) -> None:
    records = _three_records()
    file, _ = _file(records)
    for seed in range(8 if kind == "random" else 1):
        tail = (
            random.Random(seed * 10_000 + size).randbytes(size) if kind == "random" else bytes(size)
        )
        _assert_tail_damage(file, tail, records)


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(min_size=1, max_size=4096))
def test_arbitrary_bytes_after_valid_records_are_a_tail(tail: bytes) -> None:
    records = _three_records()
    file, _ = _file(records)
    _assert_tail_damage(file, tail, records)


@pytest.mark.parametrize("length", [0xFFFFFFF0, 0xFFFFFFFF, MAX_PAYLOAD + 1])
def test_huge_frame_length_is_damage_without_a_big_allocation(length: int) -> None:
    records = _three_records()
    file, _ = _file(records)
    tail = struct.pack(">II", length, 0) + b"\x01" * 100
    tracemalloc.start()
    started = time.perf_counter()
    try:
        scan = scan_frames(file + tail, SALT, PATH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 256 * 1024
    assert [r for _, r in scan.records] == records
    assert scan.damage is not None
    assert scan.damage.offset == len(file)
    assert "out of bounds" in scan.damage.reason


def test_length_over_max_payload_is_damage_even_with_the_bytes_present() -> None:
    # A frame whose length exceeds the bound is refused even when its bytes are all there
    # and its checksum is right: the bound is a reader rule, not only a writer one.
    file, _ = _file(_three_records())
    payload = b"\xc0" * (MAX_PAYLOAD + 1)
    length = struct.pack(">I", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length, zlib.crc32(SALT)))
    scan = scan_frames(file + length + struct.pack(">I", crc) + payload, SALT, PATH)
    assert scan.damage is not None and scan.damage.offset == len(file)
    assert len(scan.records) == 3


# -- bit flips ------------------------------------------------------------------------------


def test_bit_flip_in_a_middle_record_is_corruption_at_its_offset() -> None:
    records = _three_records()
    file, offsets = _file(records)
    middle = offsets[1]
    for bit in range(middle * 8, offsets[2] * 8):
        with pytest.raises(JournalCorrupt) as caught:
            scan_frames(_flip(file, bit), SALT, PATH)
        assert caught.value.offset == middle, bit
        assert caught.value.path == PATH
        message = str(caught.value)
        assert str(PATH) in message, bit
        assert f"byte {middle}" in message, bit


def test_bit_flip_in_the_first_record_is_corruption_at_its_offset() -> None:
    file, offsets = _file(_three_records())
    for bit in range(offsets[0] * 8, offsets[1] * 8, 7):
        with pytest.raises(JournalCorrupt) as caught:
            scan_frames(_flip(file, bit), SALT, PATH)
        assert caught.value.offset == HEADER_SIZE, bit


def test_every_bit_flip_in_the_last_record_is_a_torn_tail() -> None:
    records = _three_records()
    file, offsets = _file(records)
    last = offsets[2]
    for bit in range(last * 8, len(file) * 8):
        scan = scan_frames(_flip(file, bit), SALT, PATH)
        assert [r for _, r in scan.records] == records[:2], bit
        assert scan.end == last, bit
        assert scan.damage is not None, bit
        assert scan.damage.offset == last, bit


# -- header ---------------------------------------------------------------------------------


def test_header_round_trips_its_salt() -> None:
    header, _ = make_header(SALT)
    assert len(header) == HEADER_SIZE and header.startswith(MAGIC)
    assert decode_header(header, PATH) == SALT
    fresh, fresh_salt = make_header()
    other, other_salt = make_header()
    assert len(fresh_salt) == 16 and fresh_salt != other_salt
    assert decode_header(fresh, PATH) == fresh_salt
    assert decode_header(other, PATH) == other_salt
    assert decode_header(header + b"more bytes", PATH) == SALT


def test_wrong_magic_is_corrupt_at_offset_zero() -> None:
    header = _header_with(FORMAT_VERSION, magic=b"SQLite f")  # CRC right: the magic decides
    with pytest.raises(JournalCorrupt) as caught:
        decode_header(header, PATH)
    assert caught.value.offset == 0
    assert caught.value.path == PATH
    assert "magic" in str(caught.value) and str(PATH) in str(caught.value)


def test_short_file_with_wrong_magic_is_corrupt_not_incomplete() -> None:
    with pytest.raises(JournalCorrupt) as caught:
        decode_header(b"hello", PATH)
    assert caught.value.offset == 0


def test_other_format_version_is_a_version_error() -> None:
    header = _header_with(FORMAT_VERSION + 1)
    with pytest.raises(JournalVersionError) as caught:
        decode_header(header, PATH)
    assert caught.value.found == FORMAT_VERSION + 1
    assert caught.value.expected == FORMAT_VERSION
    assert caught.value.path == PATH
    message = str(caught.value)
    assert f"format version {FORMAT_VERSION + 1}" in message
    assert f"reads version {FORMAT_VERSION}" in message
    assert str(PATH) in message


def test_header_checksum_mismatch_is_corrupt() -> None:
    header, _ = make_header(SALT)
    bad = header[:-4] + struct.pack(">I", (zlib.crc32(header[:-4]) + 1) & 0xFFFFFFFF)
    with pytest.raises(JournalCorrupt) as caught:
        decode_header(bad, PATH)
    assert caught.value.offset == 0
    assert "checksum" in caught.value.reason


def test_every_bit_flip_in_the_header_is_refused() -> None:
    header, _ = make_header(SALT)
    for bit in range(HEADER_SIZE * 8):
        with pytest.raises(JournalCorrupt) as caught:
            decode_header(_flip(header, bit), PATH)
        assert caught.value.offset == 0, bit


def test_incomplete_header_is_none() -> None:
    header, _ = make_header(SALT)
    for size in range(HEADER_SIZE):
        assert decode_header(header[:size], PATH) is None, size


# -- salt -----------------------------------------------------------------------------------


def test_frame_from_another_file_does_not_validate() -> None:
    records = _three_records()
    foreign, _ = _file(records, OTHER_SALT)
    scan = scan_frames(foreign, SALT, PATH)
    assert scan.records == []
    assert scan.damage is not None and scan.damage.offset == HEADER_SIZE
    # A foreign frame after our own frames is a tail, not a record.
    ours, _ = _file(records[:2])
    scan = scan_frames(ours + encode_frame(records[2], OTHER_SALT), SALT, PATH)
    assert [r for _, r in scan.records] == records[:2]
    assert scan.damage is not None and scan.damage.offset == len(ours)


# -- size bound -----------------------------------------------------------------------------


def _started_with_input(size: int) -> RunStarted:
    return RunStarted(
        run_id="big-run-7", seq=0, at=1.0, workflow="w", fingerprint="f", key="k", input="x" * size
    )


def test_record_over_max_payload_is_refused_naming_the_run() -> None:
    overhead = len(msgspec.msgpack.encode(_started_with_input(1 << 17))) - (1 << 17)
    exact = _started_with_input(MAX_PAYLOAD - overhead)
    assert len(msgspec.msgpack.encode(exact)) == MAX_PAYLOAD
    # The largest allowed record is written and read back.
    file, _ = _file([exact])
    scan = scan_frames(file, SALT, PATH)
    assert scan.damage is None and [r for _, r in scan.records] == [exact]
    # One byte more is refused.
    with pytest.raises(ValueError, match="big-run-7"):
        encode_frame(_started_with_input(MAX_PAYLOAD - overhead + 1), SALT)
