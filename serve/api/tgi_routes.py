"""TGI routes: /generate, /generate_stream, the compat route /, /info, /health, and the same per adapter.

Clients that cannot pass `adapter_id` (the legacy `text-generation` Client posts to its base URL exactly as
given) use `/adapters/{name}` as their base URL.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse

import serve
from serve.api.deps import ChatDep, EngineDep, SettingsDep
from serve.api.responses import energy_json, open_stream, result_headers, run, sse
from serve.api.tgi_schemas import TGIRequest, token_json
from serve.chat import sources_json
from serve.engine.types import GenerationRequest, GenerationResult
from serve.errors import InvalidRequest, ServeError

router = APIRouter(tags=["TGI"])


def _request(body: TGIRequest, path_adapter: str | None, chat, settings) -> tuple[GenerationRequest, list]:
    p = body.parameters
    if path_adapter and p.adapter_id and p.adapter_id != path_adapter:
        raise InvalidRequest(f"adapter_id {p.adapter_id!r} contradicts the URL's adapter {path_adapter!r}", "adapter_id")
    if p.max_new_tokens and p.max_new_tokens > settings.max_new_tokens:
        raise InvalidRequest(f"max_new_tokens must be <= {settings.max_new_tokens}. Given: {p.max_new_tokens}", "max_new_tokens")
    if p.stop and len(p.stop) > settings.max_stop_sequences:
        raise InvalidRequest(f"stop supports at most {settings.max_stop_sequences} sequences. Given: {len(p.stop)}", "stop")
    adapter = chat.adapter_for(path_adapter or p.adapter_id)
    prompt, sources = chat.ground_text(body.inputs, adapter)  # grounded adapters only
    return GenerationRequest(prompt=prompt, adapter=adapter, params=p.sampling(settings.default_max_new_tokens)), sources


def _details(result: GenerationResult, body: TGIRequest, chat, sources: list) -> dict:
    details = {
        "finish_reason": result.finish_reason, "generated_tokens": result.generated_tokens, "seed": result.seed,
        "prefill": [token_json(t) for t in result.prefill], "tokens": [token_json(t) for t in result.tokens],
        "energy_joules": result.energy_joules, "energy_source": result.energy_source,
        "handoff": chat.handoff_for_prompt(body.inputs, result.text, result.adapter).json(),
        "sources": sources_json(sources),
    }
    if body.parameters.top_n_tokens:
        details["top_tokens"] = [[token_json(x) for x in (t.top_tokens or [])] for t in result.tokens]
    return details


async def _generate(body: TGIRequest, path_adapter, chat, engine, settings, as_list: bool) -> Response:
    req, sources = _request(body, path_adapter, chat, settings)
    result = await run(engine, req, settings.request_timeout_s)
    text = (body.inputs + result.text) if body.parameters.return_full_text else result.text
    payload = {"generated_text": text}
    if body.parameters.details:
        payload["details"] = _details(result, body, chat, sources)
    return JSONResponse([payload] if as_list else payload, headers=result_headers(result, engine.device))


async def _stream(body: TGIRequest, path_adapter, chat, engine, settings) -> StreamingResponse:
    req, sources = _request(body, path_adapter, chat, settings)  # errors here are plain JSON responses, before the stream
    prefix = body.inputs if body.parameters.return_full_text else ""
    events = await open_stream(engine, req, settings.request_timeout_s)  # refusals (429, 422, ...) before the stream

    async def frames():
        index, last = 0, None
        try:
            async for event in events:
                if isinstance(event, GenerationResult):
                    if last is not None:  # TGI puts the full text and details on the last token's event
                        last["generated_text"] = prefix + event.text
                        last["details"] = {
                            "finish_reason": event.finish_reason, "generated_tokens": event.generated_tokens,
                            "seed": event.seed, "energy_joules": event.energy_joules, "energy_source": event.energy_source,
                            "handoff": chat.handoff_for_prompt(body.inputs, event.text, req.adapter).json(),
                            "sources": sources_json(sources),
                        }
                        yield sse(last, space=False)
                    return
                index += 1
                frame = {"index": index, "token": token_json(event), "generated_text": None, "details": None}
                if event.top_tokens is not None:
                    frame["top_tokens"] = [token_json(t) for t in event.top_tokens]
                if event.last:
                    last = frame  # sent with the result, which follows at once
                else:
                    yield sse(frame, space=False)
        except ServeError as exc:
            yield sse({"error": exc.message, "error_type": exc.kind}, space=False)

    return StreamingResponse(frames(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


@router.post("/generate")
async def generate(body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Generate text (TGI). The adapter is `parameters.adapter_id`."""
    return await _generate(body, None, chat, engine, settings, as_list=False)


@router.post("/generate_stream")
async def generate_stream(body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Generate text as server-sent events, one token per event (TGI)."""
    return await _stream(body, None, chat, engine, settings)


@router.post("/")
async def compat(body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """TGI's compat route: streams when `stream` is true, else answers a one-element JSON list."""
    if body.stream:
        return await _stream(body, None, chat, engine, settings)
    return await _generate(body, None, chat, engine, settings, as_list=True)


@router.post("/adapters/{name}/generate")
async def adapter_generate(name: str, body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    return await _generate(body, name, chat, engine, settings, as_list=False)


@router.post("/adapters/{name}/generate_stream")
async def adapter_generate_stream(name: str, body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    return await _stream(body, name, chat, engine, settings)


@router.post("/adapters/{name}")
async def adapter_compat(name: str, body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """The compat route for one adapter: a base URL for clients that cannot pass `adapter_id`."""
    if body.stream:
        return await _stream(body, name, chat, engine, settings)
    return await _generate(body, name, chat, engine, settings, as_list=True)


@router.get("/info")
async def info(engine: EngineDep, settings: SettingsDep):
    """Model and limits, as TGI's /info (no secrets, no file-system paths)."""
    return {
        "model_id": engine.name, "model_sha": engine.fingerprint, "model_dtype": str(engine.dtype).replace("torch.", ""),
        "model_device_type": engine.device, "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": settings.max_queue + settings.max_batch_size, "max_best_of": 1,
        "max_stop_sequences": settings.max_stop_sequences, "max_input_tokens": engine.max_input_tokens,
        "max_input_length": engine.max_input_tokens, "max_total_tokens": engine.max_total_tokens,
        "max_batch_size": settings.max_batch_size, "max_client_batch_size": 1, "max_adapters": settings.max_adapters,
        "adapters": sorted(engine.adapters()), "router": "supportkit", "version": serve.__version__, "sha": None,
        "docker_label": None, "validation_workers": 1, "waiting_served_ratio": 0.0, "max_waiting_tokens": 0,
    }


@router.get("/health")
async def health(engine: EngineDep):
    """200 with an empty body when the engine runs; 503 otherwise."""
    if engine.health():
        return Response(status_code=200)
    return JSONResponse({"error": "unhealthy", "error_type": "healthcheck"}, status_code=503)
