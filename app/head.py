"""``HEAD`` answered for every ``GET`` resource (RFC 9110 s9.3.2; GIS clients probe with it): the request runs
as a ``GET`` and the body is dropped, headers (Content-Length, ETag, Content-Type) kept. A path with no GET
still answers 405. Outermost middleware, so access control, audit and caching see the GET."""
from __future__ import annotations


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
