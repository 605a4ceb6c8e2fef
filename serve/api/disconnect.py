"""Cancel a request's handler when its client goes away before the answer is sent.

Streaming responses stop on their own when the client leaves (Starlette ends them), but a non-streaming
generation would run to its last token for nobody, holding a row of the batch. This ASGI middleware watches
the connection once the request body has been read and cancels the handler on `http.disconnect`; the
engine's stream then marks the row cancelled and frees it at the next step.
"""

from __future__ import annotations

import asyncio


class CancelOnDisconnect:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        body_read = asyncio.Event()
        disconnect: asyncio.Future = loop.create_future()
        state = {"responded": False, "cancelled_by_us": False}

        async def app_receive():
            if body_read.is_set():  # past the body only a disconnect can come; the watcher reads it
                return await asyncio.shield(disconnect)
            message = await receive()
            if message["type"] == "http.disconnect":
                if not disconnect.done():
                    disconnect.set_result(message)
                body_read.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def app_send(message):
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state["responded"] = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def watch():
            await body_read.wait()
            message = disconnect.result() if disconnect.done() else await receive()
            if message["type"] != "http.disconnect":
                return
            if not disconnect.done():
                disconnect.set_result(message)
            if not state["responded"] and not task.done():
                state["cancelled_by_us"] = True
                task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await task
        except asyncio.CancelledError:
            if not state["cancelled_by_us"]:
                raise  # cancelled from outside (shutdown): let it through
        finally:
            watcher.cancel()
