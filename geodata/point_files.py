"""GeoJSON and Parquet point files read as bounded chunks of text columns (see geodata/readers.py).

GeoJSON is parsed as a stream of events (ijson, C backend) with a nesting limit, so neither a huge
FeatureCollection nor ``[[[[...`` can exhaust memory or the stack; Parquet is read a record batch at a time
after its declared size has been checked against the batch budget.
"""
from __future__ import annotations

from typing import BinaryIO, Iterator

import ijson
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from geodata.readers import Budget, IngestError, RawChunk


def _text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    for col in frame.columns:
        if col != "_line":
            frame[col] = frame[col].astype("string")
    return frame


class _WithoutBom:
    """The stream with a leading UTF-8 byte-order mark dropped (the JSON parser refuses it)."""

    def __init__(self, inner: BinaryIO):
        self.inner = inner
        head = inner.read(3)
        self.head = head[3:] if head.startswith(b"\xef\xbb\xbf") else head

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson probes the stream's type with read(0)
            return b""
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.inner.read(n)


def _events(stream: BinaryIO, name: str, max_depth: int):
    """(event, value, depth) with the depth after a start event; refuses documents nested too deeply."""
    stream = _WithoutBom(stream)
    depth = 0
    try:
        for event, value in ijson.basic_parse(stream, use_float=True):
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > max_depth:
                    raise IngestError(f"{name}: JSON nested deeper than {max_depth} levels (a GeoJSON "
                                      "FeatureCollection of points needs 5); not read")
            elif event in ("end_map", "end_array"):
                depth -= 1
            yield event, value, depth
    except ijson.JSONError as exc:
        raise IngestError(f"{name}: not valid JSON ({str(exc)[:200]})") from exc
    except UnicodeDecodeError as exc:
        raise IngestError(f"{name}: GeoJSON must be UTF-8 text ({exc})") from exc


def _features(stream: BinaryIO, name: str, max_depth: int) -> Iterator[object]:
    """Each element of the top-level ``features`` array, built as Python values; checks the document is a
    FeatureCollection (at its end when ``type`` follows ``features``)."""
    doc_type = None
    key = None
    in_features = False
    builder: ijson.ObjectBuilder | None = None
    seen_features = False
    top = None
    for event, value, depth in _events(stream, name, max_depth):
        if top is None:
            top = event
            if event != "start_map":
                raise IngestError(f"{name}: expected a GeoJSON FeatureCollection")
            continue
        if builder is not None:
            builder.event(event, value)
            if depth == 2:  # the feature's value is complete
                yield builder.value
                builder = None
            continue
        if in_features:
            if event == "end_array" and depth == 1:
                in_features = False
            elif event in ("start_map", "start_array"):
                builder = ijson.ObjectBuilder()
                builder.event(event, value)
            else:  # a scalar feature (null, a number, a string)
                yield value
            continue
        if depth == 1 and event == "map_key":
            key = value
        elif depth == 2 and key == "features" and event == "start_array":
            in_features = seen_features = True
            key = None
        elif depth == 1 and key == "type" and event in ("string", "number", "boolean", "null"):
            doc_type = value
            key = None
        elif depth == 1:
            key = None
    if doc_type != "FeatureCollection" or not seen_features:
        raise IngestError(f"{name}: expected a GeoJSON FeatureCollection")


def _feature_record(feat: object, index: int) -> dict:
    feat = feat if isinstance(feat, dict) else {}  # hostile input: null, numbers, lists as features
    props = feat.get("properties")
    props = dict(props) if isinstance(props, dict) else {}
    geom = feat.get("geometry") if isinstance(feat.get("geometry"), dict) else {}
    coords = geom.get("coordinates") if geom.get("type") == "Point" else None
    ok = isinstance(coords, list) and len(coords) >= 2
    props["longitude"] = coords[0] if ok else None
    props["latitude"] = coords[1] if ok else None
    if geom and geom.get("type") != "Point":
        props["_geometry_error"] = f"geometry is {geom.get('type')}, not Point"
    props["_line"] = index  # feature index (0-based) stands in for a line number
    return props


def read_geojson(stream: BinaryIO, name: str, budget: Budget) -> Iterator[RawChunk]:
    size = budget.limits.chunk_rows
    records: list[dict] = []
    yielded = False
    for i, feat in enumerate(_features(stream, name, budget.limits.max_json_depth)):
        records.append(_feature_record(feat, i))
        if len(records) >= size:
            budget.add_rows(len(records), name)
            yield RawChunk(name, _text_frame(pd.DataFrame.from_records(records)))
            records, yielded = [], True
    if records or not yielded:
        budget.add_rows(len(records), name)
        yield RawChunk(name, _text_frame(pd.DataFrame.from_records(records)))


def read_parquet(stream: BinaryIO, name: str, budget: Budget) -> Iterator[RawChunk]:
    try:
        pf = pq.ParquetFile(stream)
        meta = pf.metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"{name}: not a readable Parquet file ({exc})") from exc
    names = pf.schema_arrow.names
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise IngestError(f"{name}: repeated column name(s) {repeated}: each column must be named once")
    # the declared uncompressed size is what reading inflates to: checked before anything is read
    budget.add_bytes(sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)), name)
    budget.add_rows(meta.num_rows, name)
    start = 1
    try:
        for batch in pf.iter_batches(batch_size=budget.limits.chunk_rows):
            frame = batch.to_pandas()
            if "geometry" in frame.columns:
                geoms = shapely.from_wkb(frame.pop("geometry").to_numpy(), on_invalid="ignore")
                is_point = shapely.get_type_id(geoms) == 0
                frame["longitude"] = np.where(is_point, shapely.get_x(geoms), np.nan)
                frame["latitude"] = np.where(is_point, shapely.get_y(geoms), np.nan)
            for col in frame.columns:
                if pd.api.types.is_datetime64_any_dtype(frame[col]):
                    frame[col] = frame[col].dt.strftime("%Y-%m-%d %H:%M")
                frame[col] = frame[col].astype("string")
            frame["_line"] = np.arange(start, start + len(frame))  # Parquet has no lines: 1-based row number
            start += len(frame)
            yield RawChunk(name, frame)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"{name}: not a readable Parquet file ({exc})") from exc
