"""Request-body size limit (HTTP 413) as plain ASGI middleware: checks Content-Length, then counts bytes.

A chunked upload (no Content-Length) is counted as it arrives; once it passes the limit the body stops being
read and the answer is 413, whatever the route or the form parser would have said about the cut-off body
(Starlette's form parser turns an error while reading into its own 400, which is replaced here).
"""
from __future__ import annotations

import json


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
                await self._reject(send)
        except Exception:
            if not tripped:
                raise
            if not started:
                started = True
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


class _TooLarge(Exception):
    pass
