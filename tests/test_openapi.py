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
