"""Streaming readers: offence files (CSV, gzip, zip, GeoJSON, Parquet) as bounded chunks of text columns.

Nothing here holds a whole file in memory.  Each file is read in blocks (CSV: ``block_bytes`` cut at a line
end; GeoJSON and Parquet: ``chunk_rows`` records), gzip and zip members are inflated as they are read, and
every byte after decompression and every row counts against the batch's :class:`IngestLimits`; going over
either raises :class:`IngestLimitError` (HTTP 413) before more is read.  So the memory an ingest needs is a
few blocks, whatever the upload inflates to (docs/ingest.md, "Memory bound").

Every chunk carries a ``_line`` column: the physical line of the row in its CSV (header = line 1), the
feature index in a GeoJSON file, or the 1-based row number in a Parquet file.  Rows the CSV parser cannot
split into the header's fields (too few or too many) are rejected with their line, never a whole-file error.
"""
from __future__ import annotations

import codecs
import errno
import gzip
import io
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv


class IngestError(ValueError):
    """A whole file could not be read (wrong format, unreadable, no usable columns)."""


class IngestLimitError(IngestError):
    """The batch is larger than the limits allow (inflated bytes or rows): HTTP 413."""


@dataclass(frozen=True)
class IngestLimits:
    """What one batch may hold and how it is cut; the doors fill it from geodata.settings.

    ``max_inflated_bytes``: bytes read after decompression, summed over every file of the batch.
    ``max_rows``: rows read (stored, rejected or duplicate) in the batch.  ``None`` means no cap.
    ``block_bytes`` / ``chunk_rows``: the unit of work (CSV bytes / GeoJSON and Parquet records per chunk);
    the memory an ingest needs grows with these, not with the file.
    ``oldest_month`` / ``newest``: occurrence dates outside [oldest_month, newest] are rejected per row
    (``newest`` None = the moment of ingest)."""

    max_inflated_bytes: int | None = 2 << 30
    max_rows: int | None = None
    block_bytes: int = 16 << 20
    chunk_rows: int = 250_000
    max_line_bytes: int = 1 << 20
    max_json_depth: int = 32
    oldest_month: str = "1990-01"
    newest: pd.Timestamp | None = None

    def newest_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.newest) if self.newest is not None else pd.Timestamp.now()


@dataclass
class Budget:
    """Bytes and rows read so far in one batch, checked against the limits as they grow."""

    limits: IngestLimits
    bytes: int = 0
    rows: int = 0

    def add_bytes(self, n: int, name: str) -> None:
        self.bytes += n
        cap = self.limits.max_inflated_bytes
        if cap is not None and self.bytes > cap:
            raise IngestLimitError(
                f"{name}: the upload inflates to more than {_mb(cap)} after decompression (limit "
                "HARMSPOT_MAX_INFLATED_MB, counted over every file of the batch); split it into smaller batches")

    def add_rows(self, n: int, name: str) -> None:
        self.rows += n
        cap = self.limits.max_rows
        if cap is not None and self.rows > cap:
            raise IngestLimitError(f"{name}: the batch holds more than {cap:,} rows (limit HARMSPOT_MAX_BATCH_ROWS); "
                                   "split it into smaller batches")


def _mb(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MB"


@dataclass
class RawChunk:
    """Text columns of up to one block of one file, with ``_line``; rows the reader itself rejected."""

    name: str
    data: pa.Table | pd.DataFrame
    rejects: list[pd.DataFrame] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return self.data.column_names if isinstance(self.data, pa.Table) else list(self.data.columns)

    @property
    def num_rows(self) -> int:
        return self.data.num_rows if isinstance(self.data, pa.Table) else len(self.data)


def reject_frame(file: str, lines, reasons, raw) -> pd.DataFrame:
    return pd.DataFrame({"file": file, "line": np.asarray(lines, dtype=np.int64), "reason": reasons, "raw": raw})


# ---------------------------------------------------------------- byte streams

def _storage_error(exc: BaseException) -> bool:
    """An OS error of the machine (disk full, quota), not of the file: never reported as a bad file."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO)


_READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError)


class _Counted:
    """A read-only stream that counts every byte it hands out against the batch budget and turns decoder
    errors (corrupt gzip / zip member) into :class:`IngestError`.  ``read(n)`` passes the inner stream's
    bytes on without copying them."""

    def __init__(self, inner: BinaryIO, budget: Budget, name: str, what: str):
        self.inner, self.budget, self.name, self.what = inner, budget, name, what

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.inner.read(n)
        except _READ_ERRORS as exc:
            if _storage_error(exc):
                raise
            raise IngestError(f"{self.name}: not a valid {self.what} ({exc})") from exc
        self.budget.add_bytes(len(data), self.name)
        return data


def _open_raw(path: Path, data) -> BinaryIO:
    if data is None:
        try:
            return open(path, "rb")
        except OSError as exc:
            if _storage_error(exc):
                raise
            raise IngestError(f"{path}: cannot be opened ({exc.strerror or exc})") from exc
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(data)
    if isinstance(data, pa.Buffer):
        return pa.BufferReader(data)
    data.seek(0)
    return data  # an open binary file (e.g. an upload spooled to disk)


def read_source(path: Path | str, data=None, budget: Budget | None = None) -> Iterator[RawChunk]:
    """Read one file (or every CSV in a zip) as chunks of text columns with ``_line``.

    ``data``: the file's bytes, an open binary file, or None to open ``path``."""
    budget = budget or Budget(IngestLimits())
    path = Path(path)
    name = path.name
    lower = name.lower()
    raw = _open_raw(path, data)
    try:
        stream: BinaryIO = raw
        if lower.endswith(".gz"):
            lower = lower[:-3]
            stream = _Counted(gzip.GzipFile(fileobj=raw, mode="rb"), budget, name, "gzip file")
        if lower.endswith(".zip"):
            yield from _read_zip(name, _seekable(stream, raw), budget)
        elif lower.endswith(PARQUET_SUFFIXES):
            from geodata.point_files import read_parquet

            yield from read_parquet(_seekable(stream, raw), name, budget)  # counts its inflated size itself
        else:
            if stream is raw:
                stream = _Counted(raw, budget, name, "file")
            yield from _read_one(name, lower, stream, budget)
    finally:
        if data is None:
            raw.close()


PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")


def _seekable(stream: BinaryIO, raw: BinaryIO) -> BinaryIO:
    """Zip and Parquet need seeking: a decompressed stream is inflated to a temporary file first (counted
    against the budget as it is read); the file as given is used in place."""
    if stream is raw:
        return raw
    spool = tempfile.TemporaryFile()
    while block := stream.read(1 << 20):
        spool.write(block)
    spool.seek(0)
    return spool


def _read_zip(name: str, stream: BinaryIO, budget: Budget) -> Iterator[RawChunk]:
    try:
        archive = zipfile.ZipFile(stream)
        members = sorted(m for m in archive.namelist() if m.lower().endswith(".csv") and not m.startswith("__MACOSX"))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        if _storage_error(exc):
            raise
        raise IngestError(f"{name}: not a valid zip file") from exc
    if not members:
        raise IngestError(f"{name}: the zip holds no CSV file")
    for member in members:
        label = f"{name}/{member}"
        try:
            inner = archive.open(member)
        except _READ_ERRORS as exc:
            if _storage_error(exc):
                raise
            raise IngestError(f"{name}: a member of the zip cannot be read ({exc})") from exc
        with inner:
            yield from _read_one(label, member.lower(), _Counted(inner, budget, label, "zip member"), budget)


def _read_one(name: str, lower: str, stream: BinaryIO, budget: Budget) -> Iterator[RawChunk]:
    if lower.endswith((".geojson", ".json")):
        from geodata.point_files import read_geojson

        yield from read_geojson(stream, name, budget)
    else:
        yield from read_csv(stream, name, budget)


# ---------------------------------------------------------------- CSV

def _line_blocks(stream: BinaryIO, name: str, limits: IngestLimits) -> Iterator[bytes]:
    """Blocks of about ``block_bytes`` that end at a line end (the last one may not)."""
    carry = b""
    while True:
        data = stream.read(limits.block_bytes)
        if not data:
            if carry:
                yield carry
            return
        block = carry + data
        cut = max(block.rfind(b"\n"), block.rfind(b"\r"))
        if cut < 0:
            if len(block) > max(limits.max_line_bytes, limits.block_bytes):
                raise IngestError(f"{name}: a line longer than {_mb(limits.max_line_bytes)} (not a CSV of records)")
            carry = block
            continue
        if block[cut:cut + 1] == b"\r" and cut + 1 == len(block):
            nxt = stream.read(1)  # keep a CRLF pair in one block
            block += nxt
            if nxt == b"\n":
                cut += 1
        carry, block = block[cut + 1:], block[:cut + 1]
        if len(carry) > limits.max_line_bytes:
            raise IngestError(f"{name}: a line longer than {_mb(limits.max_line_bytes)} (not a CSV of records)")
        yield block


def _utf16_blocks(blocks: Iterator[bytes]) -> Iterator[bytes]:
    decoder = codecs.getincrementaldecoder("utf-16")()
    for block in blocks:
        yield decoder.decode(block).encode("utf-8")
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail.encode("utf-8")


def is_utf8(data: bytes) -> bool:
    """Whole-buffer UTF-8 check in Arrow's validator (far cheaper than ``bytes.decode``)."""
    buf = pa.py_buffer(data)
    offsets = pa.py_buffer(np.array([0, len(buf)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, buf]).validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _as_utf8(block: bytes) -> bytes:
    """UTF-8 as it is; otherwise the block is read as Windows-1252 (Latin-1 exports), as a whole file was."""
    return block if is_utf8(block) else block.decode("cp1252", errors="replace").encode("utf-8")


def _line_count(block: bytes) -> int:
    """Lines as Arrow's CSV parser counts them (LF, CRLF and a lone CR each end one)."""
    ends = block.count(b"\n")
    if b"\r" in block:
        ends += block.count(b"\r") - block.count(b"\r\n")
    return ends + (1 if block and block[-1:] not in (b"\n", b"\r") else 0)


def _header(first: bytes, name: str) -> list[str]:
    line_end = min((i for i in (first.find(b"\n"), first.find(b"\r")) if i >= 0), default=len(first))
    head = first[:line_end]
    if not head.strip():
        raise IngestError(f"{name}: not a readable CSV file (the first line, the header, is empty)")
    try:
        names = pacsv.read_csv(io.BytesIO(head + b"\n"), read_options=pacsv.ReadOptions(block_size=1 << 22)).column_names
    except pa.ArrowInvalid as exc:
        raise IngestError(f"{name}: not a readable CSV file ({exc})") from exc
    seen: dict[str, int] = {}
    for col in names:
        seen[col] = seen.get(col, 0) + 1
    repeated = sorted(c for c, k in seen.items() if k > 1)
    if repeated:
        raise IngestError(f"{name}: repeated column name(s) {repeated} in the header: each column must be named "
                          "once (rename or drop the copies)")
    return names


def read_csv(stream: BinaryIO, name: str, budget: Budget) -> Iterator[RawChunk]:
    """Every column as text (numbers are validated per row later); empty fields become nulls; blank lines
    are skipped (they hold no record); a row with the wrong number of fields is rejected with its line."""
    limits = budget.limits
    blocks = _line_blocks(stream, name, limits)
    first = next(blocks, b"")
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with BOM (Excel "Unicode text")
        blocks = _utf16_blocks(_chain(first, blocks))
        try:
            first = next(blocks, b"")
        except UnicodeDecodeError as exc:
            raise IngestError(f"{name}: not valid UTF-16 text ({exc})") from exc
    if first.startswith(b"\xef\xbb\xbf"):
        first = first[3:]
    if not first.strip():
        raise IngestError(f"{name}: not a readable CSV file (empty)")
    first = _as_utf8(first)
    names = _header(first, name)
    head_lines = 1
    first_cut = _line_end(first)
    rest_of_first = first[first_cut:]
    line = 1 + head_lines  # physical line of the next row
    yielded = False
    try:
        for block in _chain(rest_of_first, blocks):
            if not block:
                continue
            block = _as_utf8(block)
            lines = _line_count(block)
            table, rejects = _parse_block(block, names, name, line, lines)
            del block
            line += lines
            budget.add_rows(table.num_rows + sum(len(r) for r in rejects), name)
            yielded = True
            yield RawChunk(name, table, rejects)
    except UnicodeDecodeError as exc:
        raise IngestError(f"{name}: not valid UTF-16 text ({exc})") from exc
    if not yielded:  # a header and no rows: still a file of this kind, with nothing in it
        empty = pa.table({c: pa.array([], pa.string()) for c in names})
        yield RawChunk(name, empty.append_column("_line", pa.array([], pa.int64())))


def _line_end(block: bytes) -> int:
    """Offset just past the first line end."""
    n, r = block.find(b"\n"), block.find(b"\r")
    if r >= 0 and (n < 0 or r < n):
        return r + (2 if block[r + 1:r + 2] == b"\n" else 1)
    return n + 1 if n >= 0 else len(block)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _parse_block(block: bytes, names: list[str], file: str, first_line: int,
                 lines: int) -> tuple[pa.Table, list[pd.DataFrame]]:
    """One block of whole lines -> (rows with ``_line``, rejects for rows with the wrong number of fields)."""
    bad: list[tuple[int | None, str, int, int]] = []

    def on_invalid(row) -> str:
        bad.append((row.number, row.text[:500], row.expected_columns, row.actual_columns))
        return "skip"

    def parse(threads: bool) -> pa.Table:
        return pacsv.read_csv(
            pa.BufferReader(block),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24, use_threads=threads),
            parse_options=pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False,
                                             invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=True,
                                                 check_utf8=False, column_types={c: pa.string() for c in names}),
        )

    try:
        table = parse(True)
        if bad:  # the threaded parser does not know where they were: parse again in order for their lines
            bad.clear()
            table = parse(False)
    except pa.ArrowInvalid as exc:
        raise IngestError(f"{file}: not a readable CSV file ({exc})") from exc
    n = table.num_rows
    pos = np.arange(n, dtype=np.int64)
    if n + len(bad) != lines and n:  # quoted values holding line ends take extra lines
        extra = np.zeros(n, dtype=np.int64)
        for col in table.columns:
            extra += pc.fill_null(pc.count_substring(col, "\n"), 0).to_numpy(zero_copy_only=False)
        pos += np.concatenate([[0], np.cumsum(extra)[:-1]])
    rejects: list[pd.DataFrame] = []
    if bad:
        at = np.array([b[0] - 1 if b[0] is not None else -1 for b in bad], dtype=np.int64)  # 0-based in block
        order = np.argsort(at, kind="stable")
        at = at[order]
        t = at - np.arange(len(at))
        pos += np.searchsorted(t, pos, side="right")
        reasons = [f"wrong number of fields: {bad[i][3]} where the header has {bad[i][2]}" for i in order]
        rejects.append(reject_frame(file, first_line + at, reasons, [bad[i][1] for i in order]))
    table = table.append_column("_line", pa.array(first_line + pos, pa.int64()))
    blank = _all_null(table, names)
    if blank is not None:
        table = table.filter(pc.invert(blank))
    return table, rejects


def _all_null(table: pa.Table, names: list[str]) -> pa.Array | None:
    """Rows where no field has a value (blank lines), or None when there are none."""
    if table.num_rows == 0:
        return None
    mask = None
    for c in names:
        col = pc.is_null(table.column(c))
        mask = col if mask is None else pc.and_(mask, col)
    mask = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
    return mask if pc.any(mask).as_py() else None
