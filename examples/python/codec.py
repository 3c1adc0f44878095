"""A Strand record batch codec written from docs/FORMAT.md alone.

Encodes producer batches (magic 1, little-endian 77-byte header, CRC-32 of
zlib, zig-zag varint records, optional raw snappy) and decodes the stored
batches of a Fetch answer. Also Kafka's murmur2 keyed partitioner
(FORMAT.md, "Keyed partitioning").

Pure Python apart from cramjam for raw (unframed) snappy blocks.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

HEADER_LEN = 77
MAGIC = 1
CODEC_NONE = 0
CODEC_SNAPPY = 1
ATTR_CODEC_MASK = 0x0007
ATTR_CONTROL = 0x0020
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024

# The header (FORMAT.md, "The header"): offset, struct format.
#   0 base_offset u64 | 8 batch_length u32 | 12 crc u32 | 16 raft_term u64
#  24 raft_index u64  | 32 append_time_ms i64 | 40 magic u8 | 41 attributes u16
#  43 record_count u32 | 47 first_timestamp_ms i64 | 55 max_timestamp_ms i64
#  63 producer_id i64 | 71 producer_epoch i16 | 73 base_sequence i32
_HEADER = struct.Struct("<QIIQQqBHIqqqhi")
assert _HEADER.size == HEADER_LEN


class BatchError(ValueError):
    """A batch (or record) that breaks a rule of docs/FORMAT.md."""


@dataclass
class Header:
    key: str
    value: Optional[bytes]


@dataclass
class Record:
    timestamp_ms: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list = field(default_factory=list)  # list[Header]
    offset: Optional[int] = None  # set by the decoder

    def same_content(self, other: "Record") -> bool:
        return (
            self.timestamp_ms == other.timestamp_ms
            and self.key == other.key
            and self.value == other.value
            and [(h.key, h.value) for h in self.headers]
            == [(h.key, h.value) for h in other.headers]
        )


@dataclass
class Producer:
    producer_id: int
    producer_epoch: int
    base_sequence: int


@dataclass
class BatchHeader:
    base_offset: int
    batch_length: int
    crc: int
    raft_term: int
    raft_index: int
    append_time_ms: int
    magic: int
    attributes: int
    record_count: int
    first_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def codec(self) -> int:
        return self.attributes & ATTR_CODEC_MASK

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.record_count


# --------------------------------------------------------------------------
# Varints (FORMAT.md, "Varints"): zig-zag, 64-bit, 7 bits a byte, LSB first.

def _write_uvarint(out: bytearray, z: int) -> None:
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def write_varint(out: bytearray, v: int) -> None:
    if not -(1 << 63) <= v < (1 << 63):
        raise BatchError(f"varint out of i64 range: {v}")
    _write_uvarint(out, ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)


def read_uvarint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    z = 0
    shift = 0
    for i in range(10):
        if pos >= end:
            raise BatchError("truncated varint")
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return z & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
    raise BatchError("varint longer than 10 bytes")


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    z, pos = read_uvarint(buf, pos, end)
    return (z >> 1) ^ -(z & 1), pos


# --------------------------------------------------------------------------
# CRC (FORMAT.md, "CRC"): zlib's CRC-32 of bytes [0,12) ++ [16,end).

def batch_crc(batch: bytes) -> int:
    return zlib.crc32(batch[16:], zlib.crc32(batch[0:12])) & 0xFFFFFFFF


def seal(batch: bytearray) -> None:
    struct.pack_into("<I", batch, 12, batch_crc(batch))


# --------------------------------------------------------------------------
# Snappy: one raw block (not the framing format).

def snappy_compress(data: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.compress_raw(data))


def snappy_decompress(data: bytes) -> bytes:
    import cramjam

    declared, _ = read_uvarint(data, 0, len(data))  # plain (not zig-zag)
    if declared > MAX_DECOMPRESSED_BYTES:
        raise BatchError(f"snappy section declares {declared} bytes, above 256 MiB")
    try:
        out = bytes(cramjam.snappy.decompress_raw(data))
    except Exception as e:  # cramjam raises its own DecompressionError
        raise BatchError(f"invalid snappy block: {e}") from None
    if len(out) != declared:
        raise BatchError(f"snappy block declared {declared} bytes, gave {len(out)}")
    return out


# --------------------------------------------------------------------------
# Encoding (FORMAT.md, "Building a batch").

def _write_bytes(out: bytearray, b: Optional[bytes]) -> None:
    if b is None:
        write_varint(out, -1)
    else:
        write_varint(out, len(b))
        out += b


def encode_record(rec: Record, first_ts: int, index: int) -> bytes:
    body = bytearray()
    body.append(0)  # record attributes
    write_varint(body, rec.timestamp_ms - first_ts)
    write_varint(body, index)
    _write_bytes(body, rec.key)
    _write_bytes(body, rec.value)
    write_varint(body, len(rec.headers))
    for h in rec.headers:
        if h.key is None:
            raise BatchError("a header key cannot be null")
        _write_bytes(body, h.key.encode("utf-8"))
        _write_bytes(body, h.value)
    out = bytearray()
    write_varint(out, len(body))
    out += body
    return bytes(out)


def encode_records_section(records: list) -> bytes:
    """The uncompressed records section of a batch of `records`."""
    first = records[0].timestamp_ms
    return b"".join(encode_record(r, first, i) for i, r in enumerate(records))


def encode_batch(
    records: list,
    compression: str = "none",
    producer: Optional[Producer] = None,
) -> bytes:
    """A producer batch: leader fields zero, CRC sealed."""
    if not records:
        raise BatchError("a producer batch holds at least one record")
    section = encode_records_section(records)
    if compression == "none":
        codec = CODEC_NONE
    elif compression == "snappy":
        codec = CODEC_SNAPPY
        section = snappy_compress(section)
    else:
        raise BatchError(f"unknown compression {compression!r}")
    pid, epoch, seq = (-1, -1, -1)
    if producer is not None:
        pid, epoch, seq = producer.producer_id, producer.producer_epoch, producer.base_sequence
    batch = bytearray(
        _HEADER.pack(
            0, HEADER_LEN - 12 + len(section), 0, 0, 0, 0,
            MAGIC, codec, len(records),
            records[0].timestamp_ms, max(r.timestamp_ms for r in records),
            pid, epoch, seq,
        )
    )
    batch += section
    seal(batch)
    return bytes(batch)


def encode_control_batch(timestamp_ms: int, payload: bytes) -> bytes:
    """A control batch as the broker writes it (producers must not send one)."""
    batch = bytearray(
        _HEADER.pack(
            0, HEADER_LEN - 12 + len(payload), 0, 0, 0, 0,
            MAGIC, ATTR_CONTROL, 0, timestamp_ms, timestamp_ms, -1, -1, -1,
        )
    )
    batch += payload
    seal(batch)
    return bytes(batch)


def stamp(batch: bytes, base_offset: int, term: int, raft_index: int, append_time_ms: int) -> bytes:
    """What a leader does to a batch it appends: write its fields, recompute the CRC."""
    b = bytearray(batch)
    struct.pack_into("<Q", b, 0, base_offset)
    struct.pack_into("<QQq", b, 16, term, raft_index, append_time_ms)
    seal(b)
    return bytes(b)


# --------------------------------------------------------------------------
# Decoding (FORMAT.md, "One record", "Reading a Fetch answer").

def parse_header(batch: bytes) -> BatchHeader:
    if len(batch) < HEADER_LEN:
        raise BatchError(f"batch of {len(batch)} bytes is shorter than the {HEADER_LEN}-byte header")
    return BatchHeader(*_HEADER.unpack_from(batch, 0))


def validate(batch: bytes) -> BatchHeader:
    """Framing checks every reader does: length, magic, control bit, codec, CRC."""
    h = parse_header(batch)
    if 12 + h.batch_length != len(batch):
        raise BatchError(f"batch_length {h.batch_length} + 12 != {len(batch)} bytes")
    if h.magic != MAGIC:
        raise BatchError(f"magic {h.magic}, expected {MAGIC}")
    if h.is_control != (h.record_count == 0):
        raise BatchError(f"control bit {h.is_control} with record_count {h.record_count}")
    if h.codec not in (CODEC_NONE, CODEC_SNAPPY):
        raise BatchError(f"unknown compression codec {h.codec}")
    crc = batch_crc(batch)
    if crc != h.crc:
        raise BatchError(f"CRC mismatch: stored {h.crc:#010x}, computed {crc:#010x}")
    return h


def _read_bytes(buf: bytes, pos: int, end: int, what: str) -> tuple[Optional[bytes], int]:
    n, pos = read_varint(buf, pos, end)
    if n == -1:
        return None, pos
    if n < -1:
        raise BatchError(f"{what} length {n}")
    if pos + n > end:
        raise BatchError(f"{what} runs past its record")
    return bytes(buf[pos : pos + n]), pos + n


def decode_records_section(section: bytes, h: BatchHeader) -> list:
    records = []
    pos = 0
    for i in range(h.record_count):
        length, pos = read_varint(section, pos, len(section))
        if length < 0 or pos + length > len(section):
            raise BatchError(f"record {i}: length {length} does not fit the section")
        end = pos + length
        if pos >= end:
            raise BatchError(f"record {i}: empty")
        if section[pos] != 0:
            raise BatchError(f"record {i}: attributes {section[pos]}, must be 0")
        pos += 1
        ts_delta, pos = read_varint(section, pos, end)
        off_delta, pos = read_varint(section, pos, end)
        if off_delta != i:
            raise BatchError(f"record {i}: offset_delta {off_delta}")
        key, pos = _read_bytes(section, pos, end, "key")
        value, pos = _read_bytes(section, pos, end, "value")
        count, pos = read_varint(section, pos, end)
        if count < 0:
            raise BatchError(f"record {i}: header_count {count}")
        headers = []
        for _ in range(count):
            hk, pos = _read_bytes(section, pos, end, "header key")
            if hk is None:
                raise BatchError(f"record {i}: null header key")
            try:
                hks = hk.decode("utf-8")
            except UnicodeDecodeError:
                raise BatchError(f"record {i}: header key is not UTF-8") from None
            hv, pos = _read_bytes(section, pos, end, "header value")
            headers.append(Header(hks, hv))
        if pos != end:
            raise BatchError(f"record {i}: {end - pos} bytes left after its last header")
        ts = (h.first_timestamp_ms + ts_delta + (1 << 63)) % (1 << 64) - (1 << 63)  # wrapping
        records.append(Record(ts, key, value, headers, offset=h.base_offset + off_delta))
    if pos != len(section):
        raise BatchError(f"{len(section) - pos} bytes after the last record")
    return records


def decode_batch(batch: bytes) -> tuple[BatchHeader, list]:
    """Validates one whole batch and decodes its records (none for a control batch)."""
    h = validate(batch)
    if h.is_control:
        return h, []
    section = bytes(batch[HEADER_LEN:])
    if h.codec == CODEC_SNAPPY:
        section = snappy_decompress(section)
    return h, decode_records_section(section, h)


def split_batches(data: bytes) -> Iterator[bytes]:
    """Splits concatenated batches by their batch_length."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            raise BatchError(f"{len(data) - pos} trailing bytes, too short for a batch")
        (length,) = struct.unpack_from("<I", data, pos + 8)
        end = pos + 12 + length
        if end > len(data):
            raise BatchError(f"batch at byte {pos} declares {12 + length} bytes, {len(data) - pos} left")
        yield bytes(data[pos:end])
        pos = end


def read_fetch(data: bytes, position: int) -> tuple[list, int]:
    """The records of a Fetch answer (PartitionData.records) at or after
    `position`, and the position to fetch next (FORMAT.md, "Reading a Fetch
    answer"). Control batches and records below `position` are skipped."""
    out = []
    for batch in split_batches(data):
        h = validate(batch)
        if h.next_offset <= position:
            continue  # wholly before the position, or a control batch
        _, records = decode_batch(batch)
        out.extend(r for r in records if r.offset >= position)
        position = h.next_offset
    return out, position


# --------------------------------------------------------------------------
# Keyed partitioning (FORMAT.md): Kafka's murmur2, toPositive, modulo.

def murmur2(key: bytes) -> int:
    M = 0x5BD1E995
    MASK = 0xFFFFFFFF
    n = len(key)
    h = (0x9747B28C ^ n) & MASK
    whole = n - n % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * M) & MASK
        k ^= k >> 24
        k = (k * M) & MASK
        h = (h * M) & MASK
        h ^= k
    tail = key[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * M) & MASK
    h ^= h >> 13
    h = (h * M) & MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions
