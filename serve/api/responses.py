"""What both protocol layers share: running a request with a timeout, SSE framing, and response headers."""

from __future__ import annotations

import asyncio
import json

from serve.engine.types import GenerationResult
from serve.errors import ServeError


class Timeout(ServeError):
    status, kind = 504, "timeout"


async def run(engine, req, timeout_s: float) -> GenerationResult:
    try:
        return await asyncio.wait_for(engine.generate(req), timeout_s)
    except asyncio.TimeoutError:
        raise Timeout(f"the generation did not finish within {timeout_s:g} s; ask for fewer tokens") from None


async def stream_with_timeout(engine, req, timeout_s: float):
    """The engine's events; the stream ends with a Timeout error past the deadline (the row is freed)."""
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
