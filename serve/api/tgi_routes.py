"""TGI routes: /generate, /generate_stream, the compat route /, /info, /health, and the same per adapter.

Clients that cannot pass `adapter_id` (the legacy `text-generation` Client posts to its base URL exactly as
given) use `/adapters/{name}` as their base URL.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse

import serve
from serve.api.deps import ChatDep, EngineDep, SettingsDep
from serve.api.errors import TGIRoute, tgi_error
from serve.api.openapi_docs import streams
from serve.api.responses import closing, open_stream, result_headers, run, sse
from serve.api.serving import check_limits, hold_last, tgi_error_event
from serve.api.tgi_schemas import Details, Generated, Info, StreamDetails, StreamEvent, TGIRequest, TGIToken
from serve.chat import sources_json
from serve.engine.types import GenerationRequest, GenerationResult
from serve.errors import AdapterNotFound, ServeError

router = APIRouter(tags=["TGI"], route_class=TGIRoute)


def _request(body: TGIRequest, path_adapter: str | None, chat, settings) -> tuple[GenerationRequest, list]:
    p = body.parameters
    if path_adapter and p.adapter_id and p.adapter_id != path_adapter:
        # At an adapter's URL only that adapter exists: another one is not found here (never silently swapped).
        raise AdapterNotFound(f"adapter_id {p.adapter_id!r} is not served at this URL, which serves adapter "
                              f"{path_adapter!r} only; drop adapter_id or use the base URL", "adapter_id")
    check_limits(settings, p.max_new_tokens, "max_new_tokens", p.stop or [])
    adapter = chat.adapter_for(path_adapter or p.adapter_id)
    prompt, sources = chat.ground_text(body.inputs, adapter)  # grounded adapters only
    return GenerationRequest(prompt=prompt, adapter=adapter, params=p.sampling(settings.default_max_new_tokens)), sources


def _stream_details(result: GenerationResult, body: TGIRequest, chat, sources: list) -> dict:
    return {"finish_reason": result.finish_reason, "generated_tokens": result.generated_tokens, "seed": result.seed,
            "energy_joules": result.energy_joules, "energy_source": result.energy_source,
            "handoff": chat.handoff_for_prompt(body.inputs, result.text, result.adapter).json(),
            "sources": sources_json(sources)}


def _details(result: GenerationResult, body: TGIRequest, chat, sources: list) -> Details:
    details = Details(**_stream_details(result, body, chat, sources), prefill=[TGIToken.of(t) for t in result.prefill],
                      tokens=[TGIToken.of(t) for t in result.tokens])
    if body.parameters.top_n_tokens:
        details.top_tokens = [[TGIToken.of(x) for x in (t.top_tokens or [])] for t in result.tokens]
    return details


async def _generate(body: TGIRequest, path_adapter, chat, engine, settings, as_list: bool) -> Response:
    req, sources = _request(body, path_adapter, chat, settings)
    result = await run(engine, req, settings.request_timeout_s)
    text = (body.inputs + result.text) if body.parameters.return_full_text else result.text
    payload = Generated(generated_text=text)
    if body.parameters.details:
        payload.details = _details(result, body, chat, sources)
    out = payload.json_body()
    return JSONResponse([out] if as_list else out, headers=result_headers(result, engine.device))


async def _stream(body: TGIRequest, path_adapter, chat, engine, settings) -> StreamingResponse:
    req, sources = _request(body, path_adapter, chat, settings)  # errors here are plain JSON responses, before the stream
    prefix = body.inputs if body.parameters.return_full_text else ""
    events = await open_stream(engine, req, settings.request_timeout_s)  # refusals (429, 422, ...) before the stream

    async def frames():
        index = 0
        try:
            async for token, result in hold_last(events):
                if token is None:
                    return  # no token at all: TGI sends no event either
                index += 1
                event = StreamEvent(index=index, token=TGIToken.of(token), generated_text=None, details=None)
                if token.top_tokens is not None:
                    event.top_tokens = [TGIToken.of(t) for t in token.top_tokens]
                if result is not None:  # TGI puts the full text and details on the last token's event
                    event.generated_text = prefix + result.text
                    event.details = StreamDetails(**_stream_details(result, body, chat, sources))
                yield sse(event.json_body(), space=False)
        except ServeError as exc:
            yield tgi_error_event(exc)

    return StreamingResponse(closing(frames(), events), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


@router.post("/generate", response_model=Generated)
async def generate(body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Generate text (TGI). The adapter is `parameters.adapter_id`."""
    return await _generate(body, None, chat, engine, settings, as_list=False)


@router.post("/generate_stream", response_model=None, openapi_extra=streams(StreamEvent, only=True))
async def generate_stream(body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Generate text as server-sent events, one token per event (TGI)."""
    return await _stream(body, None, chat, engine, settings)


@router.post("/", response_model=list[Generated], openapi_extra=streams(StreamEvent))
async def compat(body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """TGI's compat route: streams when `stream` is true, else answers a one-element JSON list."""
    if body.stream:
        return await _stream(body, None, chat, engine, settings)
    return await _generate(body, None, chat, engine, settings, as_list=True)


@router.post("/adapters/{name}/generate", response_model=Generated)
async def adapter_generate(name: str, body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    return await _generate(body, name, chat, engine, settings, as_list=False)


@router.post("/adapters/{name}/generate_stream", response_model=None, openapi_extra=streams(StreamEvent, only=True))
async def adapter_generate_stream(name: str, body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    return await _stream(body, name, chat, engine, settings)


@router.post("/adapters/{name}", response_model=list[Generated], openapi_extra=streams(StreamEvent))
async def adapter_compat(name: str, body: TGIRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """The compat route for one adapter: a base URL for clients that cannot pass `adapter_id`."""
    if body.stream:
        return await _stream(body, name, chat, engine, settings)
    return await _generate(body, name, chat, engine, settings, as_list=True)


@router.get("/info", response_model=Info)
async def info(engine: EngineDep, settings: SettingsDep):
    """Model and limits, as TGI's /info (no secrets, no file-system paths)."""
    return JSONResponse(Info(
        model_id=engine.name, model_sha=engine.fingerprint, model_dtype=str(engine.dtype).replace("torch.", ""),
        model_device_type=engine.device, model_pipeline_tag="text-generation",
        max_concurrent_requests=settings.max_queue + settings.max_batch_size, max_best_of=1,
        max_stop_sequences=settings.max_stop_sequences, max_input_tokens=engine.max_input_tokens,
        max_input_length=engine.max_input_tokens, max_total_tokens=engine.max_total_tokens,
        max_batch_size=settings.max_batch_size, max_client_batch_size=1, max_adapters=settings.max_adapters,
        adapters=sorted(engine.adapters()), router="supportkit", version=serve.__version__, sha=None,
        docker_label=None, validation_workers=1, waiting_served_ratio=0.0, max_waiting_tokens=0,
    ).json_body())


@router.get("/health", response_class=Response, responses={200: {"description": "Ready (an empty body)"}})
async def health(engine: EngineDep):
    """200 with an empty body when the engine runs; 503 otherwise."""
    if engine.health():
        return Response(status_code=200)
    return JSONResponse(tgi_error("unhealthy", "healthcheck"), status_code=503)
