"""What both protocol layers share: submitting a request with its deadline, SSE framing, and response headers."""

from __future__ import annotations

import json

from serve.api.structured import prepare
from serve.engine.generation import Generation
from serve.engine.interface import Engine
from serve.engine.types import GenerationRequest, GenerationResult
from serve.errors import InvalidRequest, Timeout  # noqa: F401  (Timeout: where the routes and tests look)


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
    """The request's result; the engine drops it past the deadline (a Timeout, 504)."""
    check_sampling(req)
    await prepare(engine, req.params.grammar)
    return await engine.generate(req, timeout_s)


async def open_stream(engine: Engine, req: GenerationRequest, timeout_s: float) -> Generation:
    """Submit a streamed request: a refusal (queue full, unknown adapter, prompt too long, a grammar that cannot be
    enforced) raises here, so it is a plain 4xx/5xx JSON answer, not an error inside a 200 stream."""
    check_sampling(req)
    await prepare(engine, req.params.grammar)
    return engine.submit(req, timeout_s)


async def closing(frames, events: Generation):
    """A response's frames; when the response ends early (the client left), the request is cancelled."""
    try:
        async for frame in frames:
            yield frame
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
