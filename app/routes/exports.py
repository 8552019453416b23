"""Map packs for planners without the server: GET /map/export (one self-contained HTML map, or a zip of one map per
key date of a set with an index page); app/map_export.py makes them."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app import map_export as mx
from app.deps import Query_, State
from app.errors import ApiError
from app.openapi import PARAMETER_SCHEMAS
from geodata.store import StoreError
from hotspots.ranking.query import DAY_REGEX

router = APIRouter(tags=["map packs"])


@router.get("/map/export", summary="Offline map pack: one self-contained HTML map (or a zip per key-date set)",
            description="A map that opens from disk with no server and no internet: folium with Leaflet and every "
            "asset inlined (no CDN, no tiles); hexagons, district outlines (the loaded `districts` layer when it covers the dataset, else the automatic districts), legend, "
            "popups with the cells' most frequent street names, period, offences, weights, caveats and the "
            "protective marking (HARMSPOT_PROTECTIVE_MARKING) baked in. `keydate=SET/DATE`: the key date's after / "
            "change / forecast layers, as on the map (the top `top` cells each); `keydate=SET`: a zip "
            "of one map per date of the set with an index page; otherwise the harm spots of `from`/`to` and the "
            f"other hotspot parameters. At most {mx.MAX_CELLS} cells per layer; a zip at most {mx.MAX_ZIP_DATES} dates "
            f"and {mx.MAX_ZIP_CELLS} cells per layer in all (dates x top). For use inside the force: there is "
            "no public-disclosure mode (use /hotspots?mode=public for outside sharing).",
            responses={200: {"content": {"text/html": {}, "application/zip": {}}}},
            openapi_extra={PARAMETER_SCHEMAS: {"top": {"maximum": mx.MAX_CELLS, "nullable": False},
                                               "method": {"enum": ["observed"]}}})
def get_map_export(state: State, q: Query_,
                   keydate: Annotated[str | None, Query(max_length=80, description="SET/YYYY-MM-DD or SET (zip); not "
                                                        "with from/to (422: the key date sets the windows).",
                                                        json_schema_extra={"pattern": rf"^[A-Za-z0-9_.-]{{1,60}}(/{DAY_REGEX})?$"},
                                                        examples=["england-2020-21/2021-05-17"])] = None
                   ) -> Response:
    if q.top is None or q.top > mx.MAX_CELLS:
        raise ApiError(422, "invalid_parameter", f"top: at most {mx.MAX_CELLS} cells per layer in a map pack")
    try:
        name, media, body = mx.make(state.store, state.default_weights, state.settings.protective_marking, q, keydate)
    except StoreError:  # unknown dataset, area or weights: 404 / 422 by the service's handler (app/errors.py)
        raise
    except mx.NotFound as exc:  # an unknown set, or a date not in it
        raise ApiError(404, "not_found", str(exc)) from exc
    except ValueError as exc:  # nothing to map, a malformed keydate, keydate with from/to, windows not computable
        raise ApiError(422, "invalid_parameter", str(exc)) from exc
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
