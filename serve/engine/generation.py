"""A submitted request: what `Engine.submit` returns once the request has been validated and queued.

Iterate it for the request's Token events and then its one GenerationResult (an error is raised from the
iteration), or await `result()`. Closing it before the result (or dropping it) cancels the request, which frees
its place in the batch at the engine's next step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from serve.engine.types import GenerationResult, Token
from serve.errors import GenerationFailed


class Generation:
    def __init__(self, events: AsyncIterator, cancel: Callable[[], None] | None = None):
        self._events = events
        self._cancel = cancel
        self.finished = False

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> Token | GenerationResult:
        if self.finished:
            raise StopAsyncIteration
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            self.finished = True
            raise GenerationFailed("generation ended without a result") from None
        except Exception:
            self.finished = True  # the engine has let go of the request already
            raise
        if isinstance(event, GenerationResult):
            self.finished = True
        return event

    async def result(self) -> GenerationResult:
        try:
            async for event in self:
                if isinstance(event, GenerationResult):
                    return event
        finally:
            await self.aclose()
        raise GenerationFailed("generation ended without a result")

    async def aclose(self) -> None:
        if not self.finished:
            self.finished = True
            self.cancel()
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    def cancel(self) -> None:
        if self._cancel is not None:
            cancel, self._cancel = self._cancel, None
            cancel()

    def __del__(self):  # a response that never started its stream still frees the row
        if not self.finished:
            self.cancel()
