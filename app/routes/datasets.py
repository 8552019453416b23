"""Datasets: upload (ingest report), list, and rejected rows."""
from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from app.deps import State
from app.errors import ApiError
from app.render import JSONResponse, frame_records, to_csv
from geodata.datasets import listing
from geodata.ingest import StudyArea, parse_stream

router = APIRouter(tags=["datasets"])
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# the mapping part is a JSON object (OpenAPI: an object property of a multipart body is sent as application/json)
MAPPING_SCHEMA = {"type": "object", "additionalProperties": {"type": "string"}}


@router.post("/datasets", summary="Upload offences (police.uk CSV or zip, force extract CSV, GeoJSON, Parquet)",
             description="Every row is stored or rejected with its file, line and reason; the batch is "
             "all-or-nothing; records already stored (same record id) are counted as duplicates, not stored twice. "
             "Returns the ingest report. Files are streamed: a batch inflating past HARMSPOT_MAX_INFLATED_MB or "
             "holding more than HARMSPOT_MAX_BATCH_ROWS rows is refused with 413 and stores nothing; a full disk "
             "answers 507.",
             responses={413: {"description": "upload, inflated size or rows over the limits (nothing stored)"},
                        422: {"description": "a file that cannot be read at all (nothing stored)"},
                        507: {"description": "the store's disk is full (nothing stored; reads keep working)"}})
def post_dataset(
    state: State,
    files: Annotated[list[UploadFile], File(description="One or more files", json_schema_extra={"minItems": 1})],
    dataset: Annotated[str, Form(description="Dataset name (letters, digits, . _ -)",
                                 json_schema_extra={"pattern": _NAME.pattern})] = "uploads",
    mapping: Annotated[str | None, Form(description='Extract column mapping, a JSON object of field -> column name, '
                                        'e.g. {"record_id": "URN"} (docs/ingest.md)', json_schema_extra=MAPPING_SCHEMA)] = None,
    area: Annotated[str | None, Form(description="Study area: a loaded area layer name (e.g. districts); rows "
                                     "outside it are rejected (an unknown layer is a 404). Default: Great Britain "
                                     "bounding box.")] = None,
) -> JSONResponse:
    if not _NAME.match(dataset):
        raise ApiError(422, "invalid_parameter", "dataset: use 1-64 letters, digits, '.', '_' or '-'")
    col_map = None
    if mapping:
        try:
            col_map = json.loads(mapping)  # JSON null: no mapping, as leaving the part out
            assert col_map is None or (isinstance(col_map, dict) and all(isinstance(v, str) for v in col_map.values()))
        except (json.JSONDecodeError, AssertionError) as exc:
            raise ApiError(422, "invalid_parameter", 'mapping: a JSON object of field -> column name') from exc
    study = StudyArea()
    if area:
        study = _study_area_from_layer(state, area)
    # the uploads are spooled to temporary files by the form parser; they are read from there a block at a
    # time and stored chunk by chunk in one transaction (memory bounded whatever they inflate to)
    sources = [(f.filename or "upload.csv", f.file) for f in files]
    titles = state.default_weights.by_title or None
    chunks = parse_stream(sources, study, col_map, titles, state.settings.ingest_limits())
    report = state.store.ingest(dataset, chunks, study if area else None)
    return JSONResponse(report.to_dict(), status_code=201)


def _study_area_from_layer(state: State, layer: str) -> StudyArea:
    import shapely

    frame = state.store.areas(layer)
    if frame.empty:
        raise ApiError(404, "not_found", f"area: no loaded area layer '{layer}'")
    geom = shapely.union_all([shapely.from_wkb(bytes(b)) for b in frame.geometry_wkb])
    shapely.prepare(geom)
    return StudyArea(bbox=tuple(geom.bounds), polygon=geom, name=f"layer {layer}")


@router.get("/datasets", summary="Datasets with counts, coverage and time precision; which one is the default",
            description="`default` names the dataset used when a request names none: HARMSPOT_DEFAULT_DATASET when "
            "that dataset is loaded, else the first dataset loaded (a later upload never changes it); "
            "`default_rule` says which. Each dataset's `coverage` gives the first and last day and month of its "
            "records and the months inside that span with no records.")
def get_datasets(state: State) -> JSONResponse:
    return JSONResponse(listing(state.store, state.settings.default_dataset))


@router.get("/datasets/{name}/rejects", summary="Rejected rows with file, line number and reason",
            description="Download as CSV with format=csv.")
def get_rejects(state: State, name: str,
                format: Annotated[Literal["json", "csv"], Query()] = "json",
                limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
                offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    frame = state.store.rejects(name, limit, offset)
    if format == "csv":
        return Response(to_csv(frame), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}-rejects.csv"'})
    by_reason = frame["reason"].value_counts().to_dict()
    return JSONResponse({"dataset": name, "rejected": len(frame), "by_reason": {str(k): int(v) for k, v in by_reason.items()},
                         "rows": frame_records(frame)})
