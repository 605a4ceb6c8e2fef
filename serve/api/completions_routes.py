"""OpenAI's text-completions route, `/v1/completions`, with vLLM's extensions (`top_k`, `repetition_penalty`,
`return_tokens_as_token_ids`, `truncate_prompt_tokens`, `stop_reason`).

The prompt is used as given (no chat template): this is the route for clients that render prompts
themselves, such as a kit server fronting this one with `--engine vllm`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, field_validator

from serve.api.deps import ChatDep, EngineDep, SettingsDep
from serve.api.errors import OpenAIRoute
from serve.api.openai_schemas import Completion, OpenAISampling
from serve.api.schemas import integral
from serve.api.openapi_docs import streams
from serve.api.responses import closing, open_stream, result_headers, run, sse
from serve.api.serving import OPENAI_FINISH, check_limits, energy, hold_last, openai_error_event, usage
from serve.engine.types import GenerationRequest, GenerationResult, SamplingParams, Token
from serve.errors import InvalidRequest, ServeError

router = APIRouter(tags=["OpenAI"], route_class=OpenAIRoute)


class CompletionRequest(OpenAISampling):
    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(
        min_length=1, max_length=1, description="One prompt per request")]
    max_tokens: int | None = Field(16, ge=1)
    echo: Literal[False] = Field(False, description="Not supported (false only)")
    logprobs: int | None = Field(None, ge=0, le=5)
    return_tokens_as_token_ids: bool = False
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    _integers = integral('max_tokens', 'logprobs', 'truncate_prompt_tokens')

    @field_validator("echo", mode="before")
    @classmethod
    def _no_echo(cls, v):
        if v is not False:  # 0 is not false
            raise ValueError("echo is not supported")
        return v

    def text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt

    def sampling(self, server_max: int) -> SamplingParams:
        # OpenAI's default of 16 tokens, within what this server allows (its limit may be lower).
        limit = self.max_tokens if "max_tokens" in self.model_fields_set and self.max_tokens else min(16, server_max)
        return self._sampling(limit, self.logprobs or 0, logprobs=self.logprobs is not None,
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


@router.post("/v1/completions", response_model=Completion, openapi_extra=streams(Completion))
async def completions(body: CompletionRequest, chat: ChatDep, engine: EngineDep, settings: SettingsDep):
    """Complete a raw prompt with the base model or an adapter (`model` = the adapter's name)."""
    params = body.sampling(settings.max_new_tokens)
    check_limits(settings, params.max_new_tokens, "max_tokens", params.stop)
    req = GenerationRequest(prompt=body.text(), adapter=chat.adapter_for(body.model), params=params)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": body.model or chat.base_name}
    as_ids, want_logprobs = body.return_tokens_as_token_ids, body.logprobs is not None

    def choice(text: str, result: GenerationResult | None, tokens: list[Token], offset: int) -> dict:
        return {"index": 0, "text": text, "finish_reason": OPENAI_FINISH[result.finish_reason] if result else None,
                "stop_reason": _stop_reason(result, params.stop) if result else None,
                "logprobs": _logprobs(tokens, as_ids, offset) if want_logprobs and tokens else None}

    if not body.stream:
        result = await run(engine, req, settings.request_timeout_s)
        payload = Completion(**head, choices=[choice(result.text, result, result.tokens, 0)], usage=usage(result),
                             energy=energy(result))
        return JSONResponse(payload.json_body(), headers=result_headers(result, engine.device))

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(**fields) -> str:
        return sse(Completion(**head, **fields).json_body())

    events = await open_stream(engine, req, settings.request_timeout_s)  # refusals before the stream begins

    async def frames():
        offset = 0
        try:
            async for token, result in hold_last(events):  # the last token goes with the finish reason
                tokens = [token] if token else []
                yield chunk(choices=[choice(token.text if token else "", result, tokens, offset)],
                            **({"energy": energy(result)} if result else {}))
                offset += len(token.text) if token else 0
                if result and include_usage:
                    yield chunk(choices=[], usage=usage(result), energy=energy(result))
        except ServeError as exc:
            yield openai_error_event(exc)
        yield sse("[DONE]")

    return StreamingResponse(closing(frames(), events), media_type="text/event-stream", headers={"x-accel-buffering": "no"})
