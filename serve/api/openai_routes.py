"""OpenAI routes: /v1/chat/completions (the adapter is `model`) and /v1/models (adapters with their parent)."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from serve.api.deps import ChatDep, EngineDep, SettingsDep
from serve.api.openai_schemas import ChatCompletionRequest
from serve.chat import sources_json
from serve.api.responses import energy_json, open_stream, result_headers, run, sse
from serve.engine.types import GenerationResult
from serve.errors import InvalidRequest, ServeError

router = APIRouter(tags=["OpenAI"])
FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length", "cancelled": "stop"}


def _logprobs(tokens) -> dict:
    return {"content": [
        {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode()),
         "top_logprobs": [{"token": x.text, "logprob": x.logprob, "bytes": list(x.text.encode())} for x in (t.top_tokens or [])]}
        for t in tokens
    ]}


def _usage(result: GenerationResult) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.generated_tokens,
            "total_tokens": result.prompt_tokens + result.generated_tokens}


async def _chat(body: ChatCompletionRequest, path_model: str | None, chat, engine, settings):
    model = path_model or body.model
    limit = body.max_completion_tokens or body.max_tokens
    if limit and limit > settings.max_new_tokens:
        raise InvalidRequest(f"max_tokens must be <= {settings.max_new_tokens}. Given: {limit}", "max_tokens")
    params = body.sampling(settings.default_max_new_tokens)
    if len(params.stop) > settings.max_stop_sequences:
        raise InvalidRequest(f"stop supports at most {settings.max_stop_sequences} sequences", "stop")
    messages = body.chat_messages()
    req, sources = chat.grounded_request(messages, model, params)
    served = model or chat.base_name
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    if not body.stream:
        result = await run(engine, req, settings.request_timeout_s)
        choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                  "finish_reason": FINISH[result.finish_reason], "logprobs": _logprobs(result.tokens) if body.logprobs else None}
        payload = {"id": cid, "object": "chat.completion", "created": created, "model": served, "choices": [choice],
                   "usage": _usage(result), "energy": energy_json(result),
                   "handoff": chat.handoff_for_messages(messages, result.text, req.adapter).json(),
                   "sources": sources_json(sources)}
        return JSONResponse(payload, headers=result_headers(result, engine.device))

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict, finish=None, **extra) -> str:
        return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": served,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}]})

    events = await open_stream(engine, req, settings.request_timeout_s)  # refusals (429, 400, ...) before the stream

    async def frames():
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for event in events:
                if isinstance(event, GenerationResult):
                    final = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served,
                             "choices": [{"index": 0, "delta": {}, "finish_reason": FINISH[event.finish_reason]}],
                             "energy": energy_json(event),
                             "handoff": chat.handoff_for_messages(messages, event.text, req.adapter).json(),
                             "sources": sources_json(sources)}
                    yield sse(final)
                    if include_usage:
                        yield sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": served,
                                   "choices": [], "usage": _usage(event), "energy": energy_json(event)})
                    break
                if event.text:
                    extra = {"logprobs": _logprobs([event])} if body.logprobs else {}
                    yield chunk({"content": event.text}, **extra)
        except ServeError as exc:
            yield sse({"error": {"message": exc.message, "type": "server_error" if exc.status >= 500 else
                                 "invalid_request_error", "param": exc.param, "code": exc.kind}})
        yield sse("[DONE]")

    return StreamingResponse(frames(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Chat with the base model or an adapter (`model` = the adapter's name)."""
    return await _chat(body, None, chat, engine, settings)


@router.post("/adapters/{name}/v1/chat/completions")
async def adapter_chat_completions(name: str, body: ChatCompletionRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Chat with one adapter, whatever `model` says (for clients whose base URL fixes the adapter)."""
    return await _chat(body, name, chat, engine, settings)


@router.get("/v1/models")
async def models(engine: EngineDep):
    """The base model and every loaded adapter (`parent` = the base model), with adapters' manifests."""
    created = int(time.time())
    data = [{"id": engine.name, "object": "model", "created": created, "owned_by": "supportkit", "root": engine.name,
             "parent": None, "max_model_len": engine.max_total_tokens}]
    for name, weights in sorted(engine.adapters().items()):
        entry = {"id": name, "object": "model", "created": created, "owned_by": "supportkit", "root": name,
                 "parent": engine.name, "max_model_len": engine.max_total_tokens,
                 "lora": {"r": weights.rank, "alpha": weights.alpha, "target_modules": weights.target_modules}}
        if weights.manifest:
            entry["manifest"] = {k: v for k, v in weights.manifest.items() if k not in ("command", "chat_template")}
        data.append(entry)
    return {"object": "list", "data": data}
