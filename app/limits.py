"""Request-body size limit (HTTP 413) as plain ASGI middleware: checks Content-Length, then counts bytes.

A chunked upload (no Content-Length) is counted as it arrives; once it passes the limit the body stops being
read and the answer is 413, whatever the route or the form parser would have said about the cut-off body
(Starlette's form parser turns an error while reading into its own 400, which is replaced here).

Before answering 413 the rest of the body is read and thrown away, up to DRAIN_BYTES: a server that closes a
socket with unread request bytes makes the kernel send a TCP reset, and a client still sending (urllib, requests,
QGIS) then sees "connection reset by peer" instead of the 413 and its reason. A body beyond that bound is cut
off (the client may see the reset; memory stays bounded since drained chunks are not kept).
"""
from __future__ import annotations

import json

DRAIN_BYTES = 64 * 1024 * 1024  # read-and-discard bound before a 413, so the client gets to read the answer


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if int(length) <= DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES)
            return await self._reject(send)
        seen = 0
        tripped = False
        started = False

        async def limited_receive():
            nonlocal seen, tripped
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    tripped = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if tripped:  # the app answered the cut-off body (e.g. 400 "error parsing the body"): say 413 instead
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _drain(receive, DRAIN_BYTES - seen)
                    await self._reject(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started:
                started = True
                await _drain(receive, DRAIN_BYTES - seen)
                await self._reject(send)
        except Exception:
            if not tripped:
                raise
            if not started:
                started = True
                await _drain(receive, DRAIN_BYTES - seen)
                await self._reject(send)

    async def _reject(self, send):
        body = json.dumps({"error": {"code": "payload_too_large",
                                     "message": f"upload larger than {self.max_bytes // (1024 * 1024)} MB "
                                                "(HARMSPOT_MAX_UPLOAD_MB)",
                                     "details": {"max_bytes": self.max_bytes}}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive, budget: int) -> None:
    """Read and discard what is left of the request body, at most `budget` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class _TooLarge(Exception):
    pass
