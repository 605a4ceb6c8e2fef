"""OpenAI's text-completions route, `/v1/completions`, with vLLM's extensions (`top_k`, `repetition_penalty`,
`return_tokens_as_token_ids`, `truncate_prompt_tokens`, `stop_reason`).

The prompt is used as given (no chat template): this is the route for clients that render prompts
themselves, such as a kit server fronting this one with `--engine vllm`.
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from serve.api.deps import ChatDep, EngineDep, SettingsDep
from serve.api.openai_schemas import OpenAISampling
from serve.api.responses import closing, energy_json, open_stream, result_headers, run, sse
from serve.engine.types import GenerationRequest, GenerationResult, SamplingParams, Token
from serve.errors import InvalidRequest, ServeError

router = APIRouter(tags=["OpenAI"])
FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length", "cancelled": "stop"}


class CompletionRequest(OpenAISampling):
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = Field(False, description="Not supported")
    logprobs: int | None = Field(None, ge=0, le=5)
    return_tokens_as_token_ids: bool = False
    truncate_prompt_tokens: int | None = Field(None, ge=1)

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise InvalidRequest("only one prompt per request is supported", "prompt")
            return self.prompt[0]
        return self.prompt

    def sampling(self) -> SamplingParams:
        return self._sampling(self.max_tokens or 16, self.logprobs or 0, logprobs=self.logprobs is not None,
                              truncate=self.truncate_prompt_tokens)


def _name(token: Token, as_ids: bool) -> str:
    return f"token_id:{token.id}" if as_ids else token.text


def _logprobs(tokens: list[Token], as_ids: bool, offset: int) -> dict:
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {
        "tokens": [_name(t, as_ids) for t in tokens], "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{_name(x, as_ids): x.logprob for x in (t.top_tokens or [])} for t in tokens],
        "text_offset": offsets,
    }


def _stop_reason(result: GenerationResult, stops: list[str]) -> str | None:
    # vLLM names the stop string that matched; with several candidates the kit knows only that one did.
    if result.finish_reason != "stop_sequence":
        return None
    return stops[0] if len(stops) == 1 else "stop_sequence"


@router.post("/v1/completions")
async def completions(body: CompletionRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Complete a raw prompt with the base model or an adapter (`model` = the adapter's name)."""
    if body.echo:
        raise InvalidRequest("echo is not supported", "echo")
    if body.max_tokens and body.max_tokens > settings.max_new_tokens:
        raise InvalidRequest(f"max_tokens must be <= {settings.max_new_tokens}. Given: {body.max_tokens}", "max_tokens")
    params = body.sampling()
    if len(params.stop) > settings.max_stop_sequences:
        raise InvalidRequest(f"stop supports at most {settings.max_stop_sequences} sequences", "stop")
    req = GenerationRequest(prompt=body.text(), adapter=chat.adapter_for(body.model), params=params)
    served = body.model or chat.base_name
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    as_ids, want_logprobs = body.return_tokens_as_token_ids, body.logprobs is not None

    def usage(result: GenerationResult) -> dict:
        return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.generated_tokens,
                "total_tokens": result.prompt_tokens + result.generated_tokens}

    if not body.stream:
        result = await run(engine, req, settings.request_timeout_s)
        choice = {"index": 0, "text": result.text, "finish_reason": FINISH[result.finish_reason],
                  "stop_reason": _stop_reason(result, params.stop),
                  "logprobs": _logprobs(result.tokens, as_ids, 0) if want_logprobs else None}
        payload = {"id": cid, "object": "text_completion", "created": created, "model": served, "choices": [choice],
                   "usage": usage(result), "energy": energy_json(result)}
        return JSONResponse(payload, headers=result_headers(result, engine.device))

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list, **extra) -> str:
        return sse({"id": cid, "object": "text_completion", "created": created, "model": served, "choices": choices, **extra})

    events = open_stream(engine, req, settings.request_timeout_s)  # refusals before the stream begins

    async def frames():
        offset, last = 0, None
        try:
            async for event in events:
                done = isinstance(event, GenerationResult)
                if done or not event.last:  # the last token is sent with the finish reason, which follows at once
                    token = last if done else event
                    choice = {"index": 0, "text": token.text if token else "",
                              "finish_reason": FINISH[event.finish_reason] if done else None,
                              "stop_reason": _stop_reason(event, params.stop) if done else None,
                              "logprobs": _logprobs([token], as_ids, offset) if want_logprobs and token else None}
                    offset += len(token.text) if token else 0
                    yield chunk([choice], **({"energy": energy_json(event)} if done else {}))
                if done:
                    if include_usage:
                        yield chunk([], usage=usage(event), energy=energy_json(event))
                    break
                if event.last:
                    last = event
        except ServeError as exc:
            yield sse({"error": {"message": exc.message, "type": "server_error" if exc.status >= 500 else
                                 "invalid_request_error", "param": exc.param, "code": exc.kind}})
        yield sse("[DONE]")

    return StreamingResponse(closing(frames(), events), media_type="text/event-stream", headers={"x-accel-buffering": "no"})
