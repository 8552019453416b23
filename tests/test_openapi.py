"""/openapi.json is OpenAPI 3.0.3 (what /conformance's oas30 class claims, and what GDAL/QGIS read): valid
against the 3.0 meta-schema (openapi-spec-validator), with the conversion rules of app/openapi.py checked one by
one against schemas pydantic/FastAPI really emit."""
from __future__ import annotations

import json

import pytest

from app.openapi import to_openapi_30


@pytest.fixture(scope="module")
def doc(api):
    r = api.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def test_served_as_valid_openapi_30(doc):
    from openapi_spec_validator import OpenAPIV30SpecValidator

    assert doc["openapi"] == "3.0.3"
    errors = [str(e)[:300] for e in OpenAPIV30SpecValidator(doc).iter_errors()]
    assert not errors, errors
    text = json.dumps(doc)
    for form in ('"$defs"', '"const"', '"prefixItems"', '"contentMediaType"', '"type": "null"', '"examples": ['):
        assert form not in text, form


def test_nullable_and_examples():
    out = to_openapi_30({"openapi": "3.1.0", "info": {"title": "t", "version": "1", "summary": "s"}, "paths": {"/x": {
        "get": {"parameters": [{"name": "q", "in": "query", "schema": {
            "anyOf": [{"type": "string"}, {"type": "null"}], "title": "Q", "examples": ["a", "b"]}}],
                "responses": {"200": {"description": "ok"}}}}}})
    schema = out["paths"]["/x"]["get"]["parameters"][0]["schema"]
    assert schema == {"type": "string", "nullable": True, "title": "Q", "example": "a"}
    assert "summary" not in out["info"] and out["openapi"] == "3.0.3"


def test_refs_bounds_uploads_and_defs():
    body = {"$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}}}},
            "type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                "kind": {"const": "pub"},
                "maybe": {"anyOf": [{"$ref": "#/$defs/Item"}, {"type": "null"}]},
                "either": {"type": ["integer", "null"]},
                "pair": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}]},
                "described": {"$ref": "#/$defs/Item", "description": "an item"}}}
    out = to_openapi_30({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {"/x": {"post": {
        "requestBody": {"content": {"application/json": {"schema": body}}}, "responses": {"200": {"description": "ok"}}}}}})
    props = out["paths"]["/x"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert out["components"]["schemas"]["Item"]["properties"]["n"] == {"type": "integer", "minimum": 0,
                                                                       "exclusiveMinimum": True}
    assert props["items"]["items"] == {"$ref": "#/components/schemas/Item"}
    assert props["file"] == {"type": "string", "format": "binary"}
    assert props["kind"] == {"enum": ["pub"]}
    assert props["maybe"] == {"nullable": True, "allOf": [{"$ref": "#/components/schemas/Item"}]}
    assert props["either"] == {"type": "integer", "nullable": True}
    assert props["pair"] == {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
    assert props["described"] == {"description": "an item", "allOf": [{"$ref": "#/components/schemas/Item"}]}
    from openapi_spec_validator import OpenAPIV30SpecValidator

    assert not list(OpenAPIV30SpecValidator(out).iter_errors())


def test_every_operation_declares_the_access_layer_answers(doc):
    """Issue 13 item 14: the access layer's 401/403 are declared where they can happen (401 only where a key is
    needed), with the error body; operations taking input declare 404 and 422 (OGC routes 400/404 instead)."""
    from app.security import required_role

    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            codes = set(op["responses"])
            assert "403" in codes, (method, path)
            open_ = required_role(method.upper(), path.replace("{", "").replace("}", "")) is None
            assert ("401" in codes) is not open_, (method, path)
            if "ogc-features" in op.get("tags", []):
                assert "422" not in codes, (method, path)
            elif op.get("parameters") or op.get("requestBody"):
                assert {"404", "422"} <= codes, (method, path)
    assert "201" in doc["paths"]["/tasking"]["post"]["responses"]
    assert "200" in doc["paths"]["/patrols/gps"]["post"]["responses"]
    assert {"404", "409", "422"} <= set(doc["paths"]["/hotspots"]["get"]["responses"])


def test_period_pattern_is_exactly_what_the_query_accepts():
    """The `pattern` every from/to declares (PERIOD_REGEX) accepts a value iff HotspotQuery does: months and every
    day, leap days included, around each edge of the supported years (1900-2999)."""
    import re
    from datetime import date, timedelta

    from hotspots.ranking.query import PERIOD_REGEX, HotspotQuery

    pattern = re.compile(PERIOD_REGEX)

    def accepted(value: str) -> bool:
        try:
            HotspotQuery(dataset="x", **{"from": value})
            return True
        except ValueError:
            return False

    values = [f"{y:04d}-{m:02d}" for y in (1899, 1900, 2024, 2999, 3000) for m in range(0, 14)]
    for year in (1899, 1900, 1904, 1999, 2000, 2023, 2024, 2100, 2400, 2999, 3000):
        values += [f"{year:04d}-{m:02d}-{d:02d}" for m in range(0, 14) for d in range(0, 33)]
    values += ["2024-3", "2024-03-1", "24-03", "2024/03", "", "2024-03-01T00:00"]
    wrong = [v for v in values if bool(pattern.match(v)) != accepted(v)]
    assert not wrong, wrong[:20]
    day = date(1900, 1, 1)
    while day.year < 1905:  # every day of a run of years through the 1900 (not leap) / 1904 (leap) edge
        assert pattern.match(day.isoformat()), day
        day += timedelta(days=1)


def test_shared_parameter_patterns_agree_with_their_validators(doc):
    """Days, hours, offences, bbox and presets on /hotspots: what the declared schema allows, the validators take
    (and a sample of what it refuses, they refuse), so a request the document allows is not refused for its form."""
    import re

    from app.deps import int_list
    from app.errors import ApiError
    from hotspots.ranking.presets import PRESETS, offence_names, resolve_offences
    from hotspots.ranking.query import HotspotQuery, parse_bbox

    schema = {p["name"]: p["schema"] for p in doc["paths"]["/hotspots"]["get"]["parameters"]}
    assert schema["preset"]["enum"] == sorted(PRESETS)
    offences = re.compile(schema["offences"]["pattern"])
    assert offences.match(",".join(offence_names())) and not offences.match("robbery,,drugs")
    resolve_offences(offence_names())  # every name the pattern lists is one the resolver takes
    for name, top in (("days", 6), ("hours", 23)):
        pat = re.compile(schema[name]["pattern"])
        for text in [str(i) for i in range(top + 1)] + [f"{a}-{b}" for a in range(top + 1) for b in range(top + 1)]:
            assert pat.match(text) and all(0 <= v <= top for v in int_list(text, name)), text
        for text in (str(top + 1), f"0-{top + 1}", "1,", "x", "-1"):
            assert not pat.match(text), text
            try:
                values = int_list(text, name)
            except ApiError:
                continue
            with pytest.raises(ValueError):  # a form the pattern refuses that parses is refused by the query model
                HotspotQuery(dataset="x", **{name: values})
    bbox = re.compile(schema["bbox"]["pattern"])
    for text in ("0.6,51.5,0.8,51.6", "-180,-90,180,90", "-180.0,-90.000,180.0,90.0", "0,0,0,0", "-8.65,49.8,1.77,60.9"):
        assert bbox.match(text), text
        HotspotQuery(dataset="x", bbox=parse_bbox(text))  # valid whenever minLon <= maxLon and minLat <= maxLat
    for text in ("180.1,0,0,0", "0,90.5,0,0", "0,0,0", "1e3,0,0,0", "0,0,0,0,0"):
        assert not bbox.match(text), text
