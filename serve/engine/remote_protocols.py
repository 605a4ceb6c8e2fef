"""The two wire protocols a remote engine speaks: TGI's (TGI, LoRAX) and OpenAI completions (vLLM).

Each protocol builds the request body from a GenerationRequest whose prompt was rendered by the kit, parses the
remote's stream into Token events and one Finish, and reads what the remote serves (limits, adapters) for the
start-up checks. Errors, whether an HTTP status or an error event inside a stream, become serve.errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx

from serve.engine.types import GenerationRequest, Token
from serve.errors import AdapterNotFound, GenerationFailed, InvalidRequest, Overloaded, ServeError, Unavailable


@dataclass
class Finish:
    finish_reason: str  # length | eos_token | stop_sequence
    text: str | None = None  # the remote's full text, when it sends one
    seed: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the remote took from its prefix cache, when it says
    prefill: list[Token] = field(default_factory=list)


@dataclass
class RemoteInfo:
    """What the remote says about itself; None where it does not say."""

    model_id: str | None = None
    device: str | None = None
    dtype: str | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_adapters: int | None = None
    adapters: set[str] | None = None  # None: the remote does not list them


_KIND_ERRORS = {
    "validation": InvalidRequest, "overloaded": Overloaded, "adapter_not_found": AdapterNotFound,
    "unavailable": Unavailable, "healthcheck": Unavailable, "rate_limit_exceeded": Overloaded,
    "model_not_found": AdapterNotFound,
}


def _error_for_status(status: int) -> type[ServeError]:
    if status in (400, 413, 422):
        return InvalidRequest
    if status == 404:
        return AdapterNotFound
    if status == 429:
        return Overloaded
    if status in (502, 503, 504):
        return Unavailable
    return GenerationFailed


def error_from_body(status: int, body: bytes, where: str) -> ServeError:
    """A remote's error response (TGI `{"error", "error_type"}` or OpenAI `{"error": {...}}`) as a ServeError."""
    message, kind = None, None
    try:
        payload = json.loads(body)
        err = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(err, dict):
            message, kind = err.get("message"), err.get("code") or err.get("type")
        elif err is not None:
            message, kind = str(err), payload.get("error_type")
        elif isinstance(payload, dict) and "detail" in payload:
            message = str(payload["detail"])
    except (ValueError, AttributeError):
        pass
    message = message or body.decode("utf-8", "replace")[:300] or f"HTTP {status}"
    cls = _error_for_status(status)
    if cls is GenerationFailed and kind in _KIND_ERRORS:
        cls = _KIND_ERRORS[kind]
    return cls(f"{where}: {message}")


def error_from_event(payload: dict, where: str) -> ServeError:
    """An error sent as an event inside a 200 stream."""
    err = payload["error"]
    if isinstance(err, dict):
        message, kind = err.get("message"), err.get("code") or err.get("type")
    else:
        message, kind = str(err), payload.get("error_type")
    return _KIND_ERRORS.get(kind, GenerationFailed)(f"{where}: {message}")


async def sse_events(response: httpx.Response):
    """The JSON payloads of a server-sent-event stream (`data:{json}` or `data: {json}`); stops at `[DONE]`."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, `:` comments, event names
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)


def _token(t: dict) -> Token:
    special = bool(t.get("special"))
    # Special tokens (end of turn, eos) carry no text for the user, as in the local engine.
    return Token(int(t["id"]), "" if special else t.get("text") or "", t.get("logprob"), special)


class TGIProtocol:
    """TGI and LoRAX: POST /generate_stream with `parameters.adapter_id`; /info, /health."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.health_url = self.url + "/health"

    def read_info(self, get) -> RemoteInfo:
        info = get(self.url + "/info").json()
        adapters = info.get("adapters")
        return RemoteInfo(
            model_id=info.get("model_id"), device=info.get("model_device_type"), dtype=info.get("model_dtype"),
            max_input_tokens=info.get("max_input_tokens") or info.get("max_input_length"),
            max_total_tokens=info.get("max_total_tokens"), max_adapters=info.get("max_adapters"),
            adapters=set(adapters) if isinstance(adapters, list) else None,
        )

    @staticmethod
    def parameters(req: GenerationRequest, adapter_id: str | None, adapter_source: str | None) -> dict:
        p = req.params
        if p.presence_penalty:
            raise InvalidRequest("presence_penalty is not supported by the TGI engine behind this server", "presence_penalty")
        params = {"max_new_tokens": p.max_new_tokens, "details": True, "do_sample": p.sampling,
                  "decoder_input_details": p.decoder_input_details}
        if p.sampling:  # TGI refuses temperature 0; greedy is do_sample=false
            params.update(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k)
        optional = {"repetition_penalty": p.repetition_penalty, "frequency_penalty": p.frequency_penalty,
                    "seed": p.seed, "stop": p.stop or None, "top_n_tokens": p.top_n_tokens or None,
                    "truncate": p.truncate, "adapter_id": adapter_id, "adapter_source": adapter_source}
        params.update(optional)
        if p.grammar is not None:  # TGI has no json_object: any object is the schema {"type": "object"}
            params["grammar"] = ({"type": "regex", "value": p.grammar.value} if p.grammar.kind == "regex"
                                 else {"type": "json", "value": p.grammar.schema})
        return {k: v for k, v in params.items() if v is not None}

    async def stream(self, client: httpx.AsyncClient, req: GenerationRequest, adapter_id, adapter_source=None):
        params = self.parameters(req, adapter_id, adapter_source)
        if req.params.decoder_input_details:  # TGI streams no prefill details: ask for the whole answer at once
            async for event in self._whole(client, req.prompt, params):
                yield event
            return
        async with client.stream("POST", self.url + "/generate_stream", json={"inputs": req.prompt, "parameters": params}) as r:
            if r.status_code != 200:
                raise error_from_body(r.status_code, await r.aread(), "the TGI engine refused the request")
            async for event in sse_events(r):
                if "error" in event:
                    raise error_from_event(event, "the TGI engine failed")
                token = _token(event["token"])
                if event.get("top_tokens"):
                    token.top_tokens = [_token(t) for t in event["top_tokens"]]
                details = event.get("details")
                token.last = details is not None
                yield token
                if details is not None:
                    yield Finish(details["finish_reason"], event.get("generated_text"), details.get("seed"))
                    return
        raise GenerationFailed("the TGI engine ended the stream without a final event")

    async def _whole(self, client, prompt: str, params: dict):
        r = await client.post(self.url + "/generate", json={"inputs": prompt, "parameters": params})
        if r.status_code != 200:
            raise error_from_body(r.status_code, r.content, "the TGI engine refused the request")
        out = r.json()
        details = out["details"]
        tops = details.get("top_tokens") or []
        tokens = [_token(t) for t in details["tokens"]]
        for i, token in enumerate(tokens):
            token.top_tokens = [_token(t) for t in tops[i]] if i < len(tops) else None
            token.last = i == len(tokens) - 1
            yield token
        prefill = [Token(int(t["id"]), t.get("text") or "", t.get("logprob")) for t in details.get("prefill") or []]
        yield Finish(details["finish_reason"], out["generated_text"], details.get("seed"), len(prefill) or None, prefill=prefill)


class VLLMProtocol:
    """vLLM's OpenAI server: POST {url}/completions with `model` = adapter; runtime LoRA load/unload."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        self.health_url = root + "/health"

    def read_info(self, get) -> RemoteInfo:
        models = get(self.url + "/models").json()["data"]
        base = next((m for m in models if not m.get("parent")), models[0] if models else {})
        return RemoteInfo(
            model_id=base.get("id"), max_total_tokens=base.get("max_model_len"),
            adapters={m["id"] for m in models if m.get("parent")},
        )

    @staticmethod
    def body(req: GenerationRequest, model: str) -> dict:
        p = req.params
        if p.decoder_input_details:
            raise InvalidRequest("decoder_input_details is not supported by the vLLM engine behind this server",
                                 "decoder_input_details")
        body = {"model": model, "prompt": req.prompt, "max_tokens": p.max_new_tokens, "stream": True,
                "stream_options": {"include_usage": True}, "logprobs": p.top_n_tokens,  # 0: each token's own
                "return_tokens_as_token_ids": True, "skip_special_tokens": True,
                # The kit's template already wrote the BOS token: vLLM would add a second one by default.
                "add_special_tokens": False,
                "temperature": (p.temperature if p.temperature is not None else 1.0) if p.sampling else 0.0}
        if p.sampling:
            body.update(top_p=p.top_p, top_k=p.top_k)
        body.update(seed=p.seed, stop=p.stop or None, repetition_penalty=p.repetition_penalty,
                    frequency_penalty=p.frequency_penalty, presence_penalty=p.presence_penalty,
                    truncate_prompt_tokens=p.truncate)
        if p.grammar is not None:
            body["structured_outputs"] = {"json_schema": {"json": p.grammar.schema}, "json_object": {"json_object": True},
                                          "regex": {"regex": p.grammar.value}}[p.grammar.kind]
        return {k: v for k, v in body.items() if v is not None}

    @staticmethod
    def _tokens(choice: dict) -> list[Token]:
        """One Token per generated token of a chunk; the chunk's text goes with its last token."""
        lp = choice.get("logprobs") or {}
        names, values = lp.get("tokens") or [], lp.get("token_logprobs") or []
        tops = lp.get("top_logprobs") or []
        tokens = []
        for i, name in enumerate(names):
            top = [Token(_token_id(k), "", v) for k, v in (tops[i] or {}).items()] if i < len(tops) and tops[i] else None
            tokens.append(Token(_token_id(name), "", values[i] if i < len(values) else None, False, top))
        if tokens:
            tokens[-1].text = choice.get("text") or ""
        return tokens

    async def stream(self, client: httpx.AsyncClient, req: GenerationRequest, model: str):
        held: Token | None = None  # a token is sent once the next chunk shows whether it is the last
        finish: Finish | None = None
        async with client.stream("POST", self.url + "/completions", json=self.body(req, model)) as r:
            if r.status_code != 200:
                raise error_from_body(r.status_code, await r.aread(), "the vLLM engine refused the request")
            async for event in sse_events(r):
                if "error" in event:
                    raise error_from_event(event, "the vLLM engine failed")
                for choice in event.get("choices") or []:
                    tokens = self._tokens(choice)
                    if not tokens and choice.get("text") and held is not None:
                        held.text += choice["text"]  # text released without a new token (held-back characters)
                    for token in tokens:
                        if held is not None:
                            yield held
                        held = token
                    if choice.get("finish_reason"):
                        reason = choice["finish_reason"]
                        if reason == "stop":
                            reason = "stop_sequence" if isinstance(choice.get("stop_reason"), str) else "eos_token"
                        finish = Finish(reason, seed=req.params.seed)
                if event.get("usage") and finish is not None:
                    finish.prompt_tokens = event["usage"].get("prompt_tokens")
                    finish.cached_tokens = (event["usage"].get("prompt_tokens_details") or {}).get("cached_tokens")
        if finish is None or held is None:
            raise GenerationFailed("the vLLM engine ended the stream without finishing the completion")
        held.last = True
        yield held
        yield finish


def _token_id(name: str) -> int:
    """vLLM's `return_tokens_as_token_ids` names each token `token_id:N`."""
    if not name.startswith("token_id:"):
        raise GenerationFailed(f"the vLLM engine sent token {name!r} instead of a token id")
    return int(name[len("token_id:") :])
