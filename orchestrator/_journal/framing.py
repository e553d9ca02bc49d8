"""Bytes on disk: a file header, then frames ``length | crc32 | payload``.

Header (32 bytes): magic ``ORCHJRN\\0``, format version (u16), reserved (u16), a random
16-byte salt, and the CRC-32 of the 28 bytes before it. Frame: payload length (u32, big
endian), CRC-32 of salt + length + payload (u32), then the msgpack payload. The salt makes a
frame valid in its own file only, so bytes left over from another file never pass.

The reader bounds the length before reading, checks the CRC before decoding and decodes
strictly. Where a frame is bad it looks for any valid frame after it: none means a torn or
garbage *tail* (what a crash mid-write leaves: cut it); one means *corruption* (fail closed).
"""

from __future__ import annotations

import secrets
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from ..errors import JournalCorrupt, JournalVersionError
from .records import Record

__all__ = (
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PAYLOAD",
    "Damage",
    "Scan",
    "check_encodable",
    "decode_header",
    "encode_frame",
    "make_header",
    "scan_frames",
)

MAGIC: Final = b"ORCHJRN\x00"
FORMAT_VERSION: Final = 1
HEADER_SIZE: Final = 32
FRAME_HEAD: Final = 8
#: A record larger than this is refused on write and treated as damage on read.
MAX_PAYLOAD: Final = 1 << 20

_HEADER = struct.Struct(">8sHH16s")
_HEADER_CRC = struct.Struct(">I")
_FRAME = struct.Struct(">II")
_LENGTH = struct.Struct(">I")

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)
_many_decoder = msgspec.msgpack.Decoder(list[Record])


def make_header(salt: bytes | None = None) -> tuple[bytes, bytes]:
    """A new file header and its salt."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    body = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, salt)
    return body + _HEADER_CRC.pack(zlib.crc32(body)), salt


def decode_header(data: bytes, path: Path) -> bytes | None:
    """The salt of a file whose header is ``data[:32]``; None if the header is incomplete.

    Raises ``JournalVersionError`` for another format version and ``JournalCorrupt`` for a
    complete header that is not one of ours.
    """
    if len(data) < HEADER_SIZE:
        if MAGIC.startswith(data[: len(MAGIC)]):
            return None
        raise JournalCorrupt(path, 0, "not an orchestrator journal (bad magic)")
    magic, version, _reserved, salt = _HEADER.unpack_from(data)
    (crc,) = _HEADER_CRC.unpack_from(data, _HEADER.size)
    if magic != MAGIC:
        raise JournalCorrupt(path, 0, "not an orchestrator journal (bad magic)")
    if crc != zlib.crc32(data[: _HEADER.size]):
        raise JournalCorrupt(path, 0, "bad header checksum")
    if version != FORMAT_VERSION:
        raise JournalVersionError(path, version, FORMAT_VERSION)
    return bytes(salt)


def _crc(salt: bytes, length: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length, zlib.crc32(salt)))


def _payload(record: Record) -> bytes:
    payload = _encoder.encode(record)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"record of run {record.run_id} is {len(payload)} bytes, over the "
            f"{MAX_PAYLOAD}-byte bound; keep step results and inputs small"
        )
    return payload


def check_encodable(record: Record) -> int:
    """The payload size of ``record``; raises as ``encode_frame`` would if it cannot be held."""
    return len(_payload(record))


def encode_frame(record: Record, salt: bytes) -> bytes:
    payload = _payload(record)
    length = _LENGTH.pack(len(payload))
    return length + _LENGTH.pack(_crc(salt, length, payload)) + payload


@dataclass(frozen=True, slots=True)
class Damage:
    """Where reading stopped and why: bytes from ``offset`` on are a torn or garbage tail."""

    offset: int
    reason: str


@dataclass(slots=True)
class Scan:
    """What a scan of one file's bytes found."""

    records: list[tuple[int, Record]] = field(default_factory=list)
    #: Offset just past the last valid frame.
    end: int = HEADER_SIZE
    #: The damaged tail, if any (None: the bytes ended on a frame boundary).
    damage: Damage | None = None


def scan_frames(data: bytes, salt: bytes, path: Path, *, start: int = HEADER_SIZE) -> Scan:
    """Decode every frame of ``data`` from ``start``; see the module docstring for damage.

    Two passes, for speed: a tight loop checks every frame's bounds and checksum, then one
    msgspec call decodes all the payloads at once (as a msgpack array).
    """
    scan = Scan(end=start)
    view = memoryview(data)
    size, seed = len(data), zlib.crc32(salt)
    unpack, crc32, pack_length = _FRAME.unpack_from, zlib.crc32, _LENGTH.pack
    # The checksum of salt + length depends on the length only; lengths repeat a lot.
    length_crcs: dict[int, int] = {}
    offsets: list[int] = []
    payloads: list[memoryview] = []
    pos = start
    while pos < size:
        try:
            length, crc = unpack(data, pos)
        except struct.error:
            scan.damage = _damage(view, pos, salt, path, "incomplete frame header")
            break
        body = pos + FRAME_HEAD
        end = body + length
        if length == 0 or length > MAX_PAYLOAD or end > size:
            scan.damage = _damage(view, pos, salt, path, _length_problem(length, end, size))
            break
        head = length_crcs.get(length)
        if head is None:
            head = length_crcs[length] = crc32(pack_length(length), seed)
        payload = view[body:end]
        if crc32(payload, head) != crc:
            scan.damage = _damage(view, pos, salt, path, "bad checksum")
            break
        offsets.append(pos)
        payloads.append(payload)
        pos = end
    scan.end = pos if scan.damage is None else scan.damage.offset
    scan.records = list(zip(offsets, _decode_all(payloads, offsets, path), strict=True))
    return scan


def _length_problem(length: int, end: int, size: int) -> str:
    if length == 0 or length > MAX_PAYLOAD:
        return f"frame length {length} out of bounds"
    return "incomplete frame"


def _damage(view: memoryview, pos: int, salt: bytes, path: Path, problem: str) -> Damage:
    """A damaged tail at ``pos``, unless valid frames follow: then it is corruption."""
    if _valid_frame_after(view, pos + 1, salt):
        raise JournalCorrupt(path, pos, problem)
    return Damage(pos, problem)


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _decode_all(payloads: list[memoryview], offsets: list[int], path: Path) -> list[Record]:
    if not payloads:
        return []
    try:
        return _many_decoder.decode(_array_header(len(payloads)) + b"".join(payloads))
    except msgspec.DecodeError:
        pass
    # Find the record at fault. Its checksum matched, so these are the bytes that were
    # written: not a torn write but a record this version cannot read.
    records = []
    for offset, payload in zip(offsets, payloads, strict=True):
        try:
            records.append(_decoder.decode(payload))
        except msgspec.DecodeError as exc:
            raise JournalCorrupt(path, offset, f"undecodable record: {exc}") from None
    return records


def _frame_problem(view: memoryview, pos: int, salt: bytes) -> str | None:
    if len(view) - pos < FRAME_HEAD:
        return "incomplete frame header"
    length, crc = _FRAME.unpack_from(view, pos)
    if length == 0 or length > MAX_PAYLOAD:
        return f"frame length {length} out of bounds"
    if pos + FRAME_HEAD + length > len(view):
        return "incomplete frame"
    payload = view[pos + FRAME_HEAD : pos + FRAME_HEAD + length]
    if _crc(salt, view[pos : pos + 4].tobytes(), payload) != crc:
        return "bad checksum"
    return None


def _valid_frame_after(view: memoryview, start: int, salt: bytes) -> bool:
    last = len(view) - FRAME_HEAD
    for pos in range(start, last):
        (length,) = _LENGTH.unpack_from(view, pos)
        # Cheap bound checks first: random bytes almost never give a length that fits.
        fits = 0 < length <= MAX_PAYLOAD and pos + FRAME_HEAD + length <= len(view)
        if fits and _frame_problem(view, pos, salt) is None:
            return True
    return False
