"""Request bodies over the limit get 413 in their route's protocol shape, counted on the bytes actually read.

A Content-Length over the limit is refused before anything reaches the app; a chunked body (no Content-Length)
is read up to the limit and then replayed to the app, so it cannot grow the server's memory past the limit.
Before a 413 the rest of the body is read and discarded (up to DRAIN_BYTES, never kept): a server that answers
and closes while the client is still sending makes the client see a reset connection instead of the answer.
"""

from __future__ import annotations

from starlette.requests import Request

from serve.api.errors import error_response

DRAIN_BYTES = 64 * 1024 * 1024


class BodyLimit:
    def __init__(self, app, max_bytes: int, drain_bytes: int = DRAIN_BYTES):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes

    async def _refuse(self, scope, receive, send, more: bool) -> None:
        drained = 0
        while more and drained < self.drain_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        message = f"request body too large (limit {self.max_bytes} bytes)"
        await error_response(Request(scope), 413, message, "validation")(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:  # the server enforces the declared length: checking it is enough
            if length.isdigit() and int(length) > self.max_bytes:
                return await self._refuse(scope, receive, send, more=True)
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(scope, receive, send, more)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
