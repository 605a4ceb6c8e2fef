"""What the three route files share: limit checks, the finish-reason map and usage block, holding a stream's last
token until its result arrives, and the error event that ends a stream that fails after it began."""

from __future__ import annotations

from collections.abc import AsyncIterator

from serve.api.errors import openai_error, tgi_error
from serve.api.responses import sse
from serve.engine.types import GenerationResult, Token
from serve.errors import InvalidRequest, ServeError
from serve.settings import ServeSettings

# The engine's finish reasons in OpenAI's words ("cancelled" is only ever seen by metrics and logs).
OPENAI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length", "cancelled": "stop"}


def check_limits(settings: ServeSettings, max_tokens: int | None, param: str, stops: list[str]) -> None:
    """The server's bounds on what one request may ask for, in TGI's words (both APIs)."""
    if max_tokens and max_tokens > settings.max_new_tokens:
        raise InvalidRequest(f"{param} must be <= {settings.max_new_tokens}. Given: {max_tokens}", param)
    if len(stops) > settings.max_stop_sequences:
        raise InvalidRequest(f"stop supports at most {settings.max_stop_sequences} sequences. Given: {len(stops)}", "stop")


def usage(result: GenerationResult) -> dict:
    counts = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.generated_tokens,
              "total_tokens": result.prompt_tokens + result.generated_tokens}
    if result.cached_tokens is not None:  # as OpenAI's: the prompt tokens served from the prefix cache
        counts["prompt_tokens_details"] = {"cached_tokens": result.cached_tokens}
    return counts


def energy(result: GenerationResult) -> dict:
    return {"joules": result.energy_joules, "source": result.energy_source}


async def hold_last(events: AsyncIterator) -> AsyncIterator[tuple[Token | None, GenerationResult | None]]:
    """(token, None) for every token but the last; then (the last token, the result) together, for protocols
    that send the finish reason with the last token (it is marked `last`; its result follows at once)."""
    held = None
    async for event in events:
        if isinstance(event, GenerationResult):
            yield held, event
            return
        if event.last:
            held = event
        else:
            yield event, None


def openai_error_event(exc: ServeError) -> str:
    """A failure inside an OpenAI stream: the same body (and code mapping) as the JSON answer would have."""
    _, body = openai_error(exc.status, exc.message, exc.kind, exc.param)
    return sse(body)


def tgi_error_event(exc: ServeError) -> str:
    return sse(tgi_error(exc.message, exc.kind), space=False)
