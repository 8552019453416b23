"""The API's self-description as OpenAPI 3.0.3, the version the OGC API - Features ``oas30`` conformance class
names and that GDAL 3.6+/QGIS 3.22 read.

FastAPI generates OpenAPI 3.1 (JSON Schema 2020-12).  :func:`to_openapi_30` rewrites the few 3.1-only forms
FastAPI and pydantic emit into their 3.0 equivalents, keeping the meaning:

* ``anyOf: [X, {"type": "null"}]`` and ``type: [X, "null"]`` -> ``X`` with ``nullable: true``;
* ``examples: [a, ...]`` inside a schema -> ``example: a``; ``const: v`` -> ``enum: [v]``;
* numeric ``exclusiveMinimum``/``exclusiveMaximum`` -> ``minimum``/``maximum`` with the boolean flag;
* ``contentMediaType`` (uploads) -> ``format: binary``; ``prefixItems`` -> ``items`` with min/max items;
* ``$ref`` with siblings -> ``allOf: [{$ref}]`` plus the siblings (3.0 ignores siblings of a ``$ref``);
* schemas' local ``$defs`` -> ``components.schemas`` (references rewritten).

``tests/test_openapi.py`` validates the result with openapi-spec-validator (an independent implementation of
the 3.0 meta-schema) and checks the conversion rule by rule.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Callable

from app.security import required_role  # the one place roles live

OPENAPI_VERSION = "3.0.3"
# A route whose shared dependency's parameter takes less there than elsewhere (e.g. /map/export's `top`) says so
# with openapi_extra={PARAMETER_SCHEMAS: {"top": {"maximum": 500}}}: merged into that parameter's schema here.
PARAMETER_SCHEMAS = "x-harmspot-parameter-schemas"
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def to_openapi_30(doc: dict) -> dict:
    """A deep copy of the FastAPI 3.1 document ``doc`` rewritten as OpenAPI 3.0.3."""
    doc = copy.deepcopy(doc)
    doc["openapi"] = OPENAPI_VERSION
    doc.pop("jsonSchemaDialect", None)
    doc.pop("webhooks", None)
    info = doc.get("info", {})
    info.pop("summary", None)
    if isinstance(info.get("license"), dict):
        info["license"].pop("identifier", None)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    hoisted: dict[str, dict] = {}
    for name, schema in list(schemas.items()):
        schemas[name] = _schema(schema, hoisted)
    for path_item in doc.get("paths", {}).values():
        for op in path_item.values():
            if not isinstance(op, dict):
                continue
            overrides = op.pop(PARAMETER_SCHEMAS, {})
            for param in op.get("parameters", []):
                _parameter(param, hoisted)
                if param.get("name") in overrides and isinstance(param.get("schema"), dict):
                    param["schema"].update(overrides[param["name"]])
            body = op.get("requestBody")
            if isinstance(body, dict):
                _content(body.get("content", {}), hoisted)
            for response in op.get("responses", {}).values():
                if isinstance(response, dict):
                    _content(response.get("content", {}), hoisted)
                    for header in response.get("headers", {}).values():
                        _parameter(header, hoisted)
    for param in doc["components"].get("parameters", {}).values():
        _parameter(param, hoisted)
    for name, schema in hoisted.items():
        schemas.setdefault(name, schema)
    _rewrite_refs(doc)
    return doc


def _parameter(param: dict, hoisted: dict) -> None:
    if "schema" in param:
        param["schema"] = _schema(param["schema"], hoisted)
    if isinstance(param.get("examples"), list):  # a 3.1-style list; 3.0 wants a map of Example Objects
        examples = param.pop("examples")
        if examples:
            param["example"] = examples[0]
    _content(param.get("content", {}), hoisted)


def _content(content: dict, hoisted: dict) -> None:
    for media in content.values():
        if isinstance(media, dict) and "schema" in media:
            media["schema"] = _schema(media["schema"], hoisted)


def _schema(schema: Any, hoisted: dict) -> Any:
    if not isinstance(schema, dict):
        return schema
    s = dict(schema)
    for key in ("anyOf", "oneOf"):
        if isinstance(s.get(key), list) and any(_is_null(v) for v in s[key]):
            rest = [v for v in s[key] if not _is_null(v)]
            s["nullable"] = True
            if len(rest) == 1:
                del s[key]
                only = rest[0]
                if "$ref" in only:
                    s["allOf"] = [only]
                else:
                    s = {**only, **s}  # its own keys (title, default, description) win
            else:
                s[key] = rest
    for name, sub in (s.pop("$defs", None) or {}).items():
        hoisted[name] = _schema(sub, hoisted)
    for key in ("properties", "patternProperties"):
        if isinstance(s.get(key), dict):
            s[key] = {k: _schema(v, hoisted) for k, v in s[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(s.get(key), dict):
            s[key] = _schema(s[key], hoisted)
    for key in _SCHEMA_LISTS:
        if isinstance(s.get(key), list):
            s[key] = [_schema(v, hoisted) for v in s[key]]
    if "prefixItems" in s:
        items = [_schema(v, hoisted) for v in s.pop("prefixItems")]
        s.setdefault("items", items[0] if len({repr(i) for i in items}) == 1 else {"anyOf": items})
        s.setdefault("minItems", len(items))
        s.setdefault("maxItems", len(items))
    s.pop("patternProperties", None)  # no 3.0 equivalent (none emitted today)
    if isinstance(s.get("type"), list):
        types = [t for t in s["type"] if t != "null"]
        if len(types) < len(s["type"]):
            s["nullable"] = True
        if len(types) == 1:
            s["type"] = types[0]
        else:
            del s["type"]
            s["anyOf"] = [{"type": t} for t in types]
    if s.get("type") == "null":
        del s["type"]
        s["nullable"] = True
        s["enum"] = [None]
    if "examples" in s:
        examples = s.pop("examples")
        if isinstance(examples, list) and examples:
            s.setdefault("example", examples[0])
    if "const" in s:
        s["enum"] = [s.pop("const")]
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(s.get(key), (int, float)) and not isinstance(s.get(key), bool):
            s[bound] = s.pop(key)
            s[key] = True
    if "contentMediaType" in s or "contentEncoding" in s:
        s.pop("contentMediaType", None)
        s.pop("contentEncoding", None)
        if s.get("type") == "string":
            s["format"] = "binary"
    if "$ref" in s and len(s) > 1:
        ref = {"$ref": s.pop("$ref")}
        s["allOf"] = [ref, *s.get("allOf", [])]
    return s


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null" and len(schema) == 1


def _rewrite_refs(node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node["$ref"] = "#/components/schemas/" + ref[len("#/$defs/"):]
        for v in node.values():
            _rewrite_refs(v)
    elif isinstance(node, list):
        for v in node:
            _rewrite_refs(v)


ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {"nullable": True}}}},
}
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _error_response(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def declare_common_responses(doc: dict, role_of: Callable[[str, str], str | None]) -> dict:
    """Declare on every operation the answers the shared layers give, so the document tells the truth
    (issue 13 item 14): 401 and 403 from the access layer (``role_of(method, path)``: the least role, or None
    when open; 403 also answers a non-loopback client in local demo mode, on every path), and, on operations
    that take parameters or a body, 404 (a named dataset, area, layer, run, pack or key that does not exist),
    409 (a write conflict, or a valid request the stored data cannot answer: ``geodata.store.DataCannotAnswer``)
    and 422 (a value the route refuses). Routes tagged ``ogc-features`` declare their own 400/404 (OGC API -
    Features answers 400, not 422). Nothing an operation declares itself is replaced."""
    doc.setdefault("components", {}).setdefault("schemas", {}).setdefault("Error", ERROR_SCHEMA)
    for path, item in doc.get("paths", {}).items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in _HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            responses = op.setdefault("responses", {})
            role = role_of(method.upper(), concrete)
            add = {"403": "refused: the key's role is below this operation's"
                          + (f" ({role})" if role else "") + ", a non-loopback client in local demo mode, or "
                          "(`mode=public`, a public key or deployment) a request public output does not publish "
                          "(code `disclosure_refused`: docs/security.md#public-output-mode)"}
            if role is not None:
                add["401"] = "no API key, or an invalid or revoked one (keyed mode)"
            if "ogc-features" in (op.get("tags") or []):
                responses.pop("422", None)  # FastAPI's default: these routes answer 400 instead (app/errors.py)
            takes_input = bool(op.get("parameters") or item.get("parameters") or op.get("requestBody"))
            if op.get("requestBody"):
                add["400"] = "a body that cannot be parsed (malformed JSON or multipart)"
            if takes_input:
                add["409"] = ("the stored data cannot answer this valid request (e.g. an hour filter on month-only "
                              "records, a backtest longer than the data: code `data_cannot_answer`), or a write "
                              "conflicted")
            if takes_input and "ogc-features" not in (op.get("tags") or []):
                add["404"] = "a named dataset, area, layer, run, pack or other stored object does not exist"
                add["422"] = "a parameter or body value the operation refuses (the message says which and why)"
            for status, description in add.items():
                responses.setdefault(status, _error_response(description))
    return doc


def install(app) -> None:
    """Serve ``/openapi.json`` as OpenAPI 3.0.3: wraps whatever ``app.openapi`` is (so other post-processing,
    e.g. the OGC ``limit`` component, composes) and keeps the converted document once built."""
    original = app.openapi
    built: dict[str, dict] = {}

    def openapi() -> dict:
        if "doc" not in built:
            built["doc"] = declare_common_responses(to_openapi_30(original()), required_role)
        return built["doc"]

    app.openapi = openapi
    app.openapi_version = OPENAPI_VERSION
