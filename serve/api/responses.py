"""What both protocol layers share: running a request with a timeout, SSE framing, and response headers."""

from __future__ import annotations

import asyncio
import json

from serve.engine.interface import Engine
from serve.engine.types import GenerationRequest, GenerationResult
from serve.errors import InvalidRequest, ServeError


class Timeout(ServeError):
    status, kind = 504, "timeout"


def check_sampling(req) -> None:
    """Refuse sampling values whose logits would overflow to inf/NaN: a NaN fails the whole batch's decode step,
    i.e. every other client's request in it. Every route passes here, whatever its schema allows."""
    p = req.params
    if p.repetition_penalty is not None and not 0.01 <= p.repetition_penalty <= 10.0:
        raise InvalidRequest("repetition_penalty must be between 0.01 and 10", "repetition_penalty")
    if p.sampling and p.temperature is not None and p.temperature < 1e-4:
        raise InvalidRequest("temperature must be >= 0.0001 when sampling (0 or do_sample=false: greedy)", "temperature")
    if p.top_p is not None and p.top_p < 1e-6:
        raise InvalidRequest("top_p must be >= 1e-6", "top_p")


async def run(engine: Engine, req: GenerationRequest, timeout_s: float) -> GenerationResult:
    check_sampling(req)
    try:
        return await asyncio.wait_for(engine.generate(req), timeout_s)
    except asyncio.TimeoutError:
        raise Timeout(f"the generation did not finish within {timeout_s:g} s; ask for fewer tokens") from None


async def stream_with_timeout(engine: Engine, req: GenerationRequest, timeout_s: float):
    """The engine's events; the stream ends with a Timeout error past the deadline (the row is freed)."""
    check_sampling(req)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    events = engine.stream(req).__aiter__()
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Timeout(f"the generation did not finish within {timeout_s:g} s")
            try:
                event = await asyncio.wait_for(events.__anext__(), remaining)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise Timeout(f"the generation did not finish within {timeout_s:g} s") from None
            yield event
    finally:
        await events.aclose()


async def open_stream(engine: Engine, req: GenerationRequest, timeout_s: float):
    """Start a generation and wait for its first event before the response begins, so that a refusal (queue
    full, unknown adapter, prompt too long, timeout) is a plain 4xx/5xx JSON answer, not an error inside a 200
    stream. Returns an async iterator over all the events, the first included."""
    events = stream_with_timeout(engine, req, timeout_s)
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await events.aclose()
        raise

    async def chained():
        try:
            if first is not None:
                yield first
                async for event in events:
                    yield event
        finally:
            await events.aclose()

    return chained()


def sse(payload: dict | str, space: bool = True) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n" if space else f"data:{data}\n\n"


def result_headers(result: GenerationResult, device: str) -> dict[str, str]:
    """TGI's timing headers (milliseconds) plus the request's energy and its source."""
    t = result.timings
    n = max(1, result.generated_tokens)
    headers = {
        "x-compute-type": "gpu" if device.startswith("cuda") else "cpu",
        "x-total-time": str(int(t.total_s * 1000)),
        "x-validation-time": "0",
        "x-queue-time": str(int(t.queue_s * 1000)),
        "x-inference-time": str(int(t.inference_s * 1000)),
        "x-time-per-token": str(int(t.inference_s * 1000 / n)),
        "x-prompt-tokens": str(result.prompt_tokens),
        "x-generated-tokens": str(result.generated_tokens),
        "x-energy-source": result.energy_source,
    }
    if result.energy_joules is not None:
        headers["x-energy-joules"] = f"{result.energy_joules:.6f}"
    return headers


def energy_json(result: GenerationResult) -> dict:
    return {"joules": result.energy_joules, "source": result.energy_source}
