"""``HEAD`` answered for every ``GET`` resource (RFC 9110 s9.3.2; GIS clients probe with it): the request runs
as a ``GET`` and the body is dropped, headers (Content-Length, ETag, Content-Type) kept. A path with no GET
still answers 405. Outermost middleware, so access control, audit and caching see the GET.

:func:`allowed_methods` is what a 405's ``Allow`` header lists (RFC 9110 s15.5.6): every method some route
takes on the path (Starlette lists only the first matching route's, and a path served by a GET and a POST
route is two routes)."""
from __future__ import annotations

import re


class HeadAsGet:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_headers_only(message):
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        return await self.app({**scope, "method": "GET"}, receive, send_headers_only)


def allowed_methods(app, scope) -> list[str] | None:
    """The methods the API describes for ``scope``'s path, sorted (None: not a described path). Read from the
    OpenAPI document (its paths are the routes), the most specific template winning: ``/areas/x.geojson`` is
    ``/areas/{layer}.geojson`` (GET), not ``/areas/{layer}`` (DELETE)."""
    table = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, item in app.openapi().get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)) + "$")
            methods = sorted(m.upper() for m in item if m in _METHODS)
            table.append((pattern, len(re.sub(r"\{[^}]*\}", "", template)), methods))
        app.state.allow_table = table
    path = scope.get("path", "")
    best = [(literal, methods) for pattern, literal, methods in table if pattern.match(path)]
    if not best:
        return None
    return max(best)[1]


_METHODS = ("get", "put", "post", "delete", "patch", "options", "trace")
