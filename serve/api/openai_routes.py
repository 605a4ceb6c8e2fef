"""OpenAI routes: /v1/chat/completions (the adapter is `model`) and /v1/models (adapters with their parent)."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from serve.api.deps import ChatDep, EngineDep, SettingsDep
from serve.api.errors import OpenAIRoute
from serve.api.openai_schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ModelCard, ModelList
from serve.api.openapi_docs import streams
from serve.api.responses import closing, open_stream, result_headers, run, sse
from serve.api.serving import OPENAI_FINISH, check_limits, energy, openai_error_event, usage
from serve.chat import sources_json
from serve.engine.types import GenerationResult
from serve.errors import ServeError

router = APIRouter(tags=["OpenAI"], route_class=OpenAIRoute)


def _logprobs(tokens) -> dict:
    return {"content": [
        {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode()),
         "top_logprobs": [{"token": x.text, "logprob": x.logprob, "bytes": list(x.text.encode())} for x in (t.top_tokens or [])]}
        for t in tokens
    ]}


async def _chat(body: ChatCompletionRequest, path_model: str | None, chat, engine, settings):
    model = path_model or body.model
    params = body.sampling(settings.default_max_new_tokens)
    check_limits(settings, body.max_tokens, "max_tokens", params.stop)
    check_limits(settings, body.max_completion_tokens, "max_completion_tokens", params.stop)
    messages = body.chat_messages()
    req, sources = chat.grounded_request(messages, model, params)
    served = model or chat.base_name
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served}

    if not body.stream:
        result = await run(engine, req, settings.request_timeout_s)
        choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                  "finish_reason": OPENAI_FINISH[result.finish_reason],
                  "logprobs": _logprobs(result.tokens) if body.logprobs else None}
        payload = ChatCompletion(**head, object="chat.completion", choices=[choice], usage=usage(result), energy=energy(result),
                                 handoff=chat.handoff_for_messages(messages, result.text, req.adapter).json(),
                                 sources=sources_json(sources))
        return JSONResponse(payload.json_body(), headers=result_headers(result, engine.device))

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(**fields) -> str:
        return sse(ChatCompletionChunk(**head, object="chat.completion.chunk", **fields).json_body())

    events = await open_stream(engine, req, settings.request_timeout_s)  # refusals (429, 400, ...) before the stream

    async def frames():
        yield chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        try:
            async for event in events:
                if isinstance(event, GenerationResult):
                    yield chunk(choices=[{"index": 0, "delta": {}, "finish_reason": OPENAI_FINISH[event.finish_reason]}],
                                energy=energy(event),
                                handoff=chat.handoff_for_messages(messages, event.text, req.adapter).json(),
                                sources=sources_json(sources))
                    if include_usage:
                        yield chunk(choices=[], usage=usage(event), energy=energy(event))
                    break
                if event.text:
                    extra = {"logprobs": _logprobs([event])} if body.logprobs else {}
                    yield chunk(choices=[{"index": 0, "delta": {"content": event.text}, "finish_reason": None, **extra}])
        except ServeError as exc:
            yield openai_error_event(exc)
        yield sse("[DONE]")

    return StreamingResponse(closing(frames(), events), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


@router.post("/v1/chat/completions", response_model=ChatCompletion, openapi_extra=streams(ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Chat with the base model or an adapter (`model` = the adapter's name)."""
    return await _chat(body, None, chat, engine, settings)


@router.post("/adapters/{name}/v1/chat/completions", response_model=ChatCompletion, openapi_extra=streams(ChatCompletionChunk))
async def adapter_chat_completions(name: str, body: ChatCompletionRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Chat with one adapter, whatever `model` says (for clients whose base URL fixes the adapter)."""
    return await _chat(body, name, chat, engine, settings)


@router.get("/v1/models", response_model=ModelList)
async def models(engine: EngineDep):
    """The base model and every loaded adapter (`parent` = the base model), with adapters' manifests."""
    card = {"object": "model", "created": int(time.time()), "owned_by": "supportkit", "max_model_len": engine.max_total_tokens}
    data = [ModelCard(id=engine.name, root=engine.name, parent=None, **card)]
    for name, weights in sorted(engine.adapters().items()):
        entry = ModelCard(id=name, root=name, parent=engine.name, **card,
                          lora={"r": weights.rank, "alpha": weights.alpha, "target_modules": weights.target_modules})
        if weights.manifest:
            entry.manifest = {k: v for k, v in weights.manifest.items() if k not in ("command", "chat_template")}
        data.append(entry)
    return JSONResponse(ModelList(object="list", data=data).json_body())
