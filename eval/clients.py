"""Chat clients for the endpoints under test and for LLM judges: the OpenAI route or the TGI route.

Both return a `Reply` with the text, latency, token counts and the energy the server reports (the kit's
`energy` field / `x-energy-joules` header on the OpenAI route, `details.energy_joules` on the TGI route);
other servers simply report none. Errors are `EndpointError`, marked retryable for transport errors,
429 and 5xx.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from common.chat_template import render_chat
from common.http import EndpointError, client, json_response, retryable_status


@dataclass
class Reply:
    text: str
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    energy_joules: float | None = None
    energy_source: str | None = None
    finish_reason: str | None = None

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class OpenAIChat:
    """POST {url}/v1/chat/completions; works with the kit, vLLM, TGI's Messages API and hosted APIs."""

    api = "openai"

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120):
        self.url = url.rstrip("/")
        self._http = client(self.url, api_key, timeout)

    def complete(self, model: str | None, messages: list[dict[str, str]], *, max_tokens: int,
                 temperature: float, seed: int, schema: dict | None = None) -> Reply:
        """`schema`: the reply must be JSON matching it (`response_format` json_schema, strict)."""
        body = {"model": model or "", "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "seed": seed, "stream": False}
        if schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
        started = time.perf_counter()
        response, data = json_response(lambda: self._http.post("/v1/chat/completions", json=body), self.url)
        latency = time.perf_counter() - started
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.url}: not a chat completion: {response.text[:200]}", retryable=True) from None
        usage = data.get("usage") or {}
        energy = data.get("energy") if isinstance(data.get("energy"), dict) else {}
        return Reply(
            text=text, latency_s=latency,
            prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
            energy_joules=_float_or_none(energy.get("joules", response.headers.get("x-energy-joules"))),
            energy_source=energy.get("source") or response.headers.get("x-energy-source"),
            finish_reason=choice.get("finish_reason"),
        )

    def list_models(self) -> list[dict[str, Any]]:
        _, body = json_response(lambda: self._http.get("/v1/models"), f"{self.url}/v1/models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise EndpointError(f"{self.url}/v1/models: no `data` list", retryable=False)
        return [m for m in data if isinstance(m, dict) and "id" in m]


class TGIChat:
    """`huggingface_hub.InferenceClient(base_url=url).text_generation(...)`; the model is the `adapter_id`.

    TGI's text route takes a prompt, not messages: they are rendered with the kit's chat template.
    """
    api = "tgi"

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120):
        from huggingface_hub import InferenceClient

        self.url = url.rstrip("/")
        self._client = InferenceClient(base_url=self.url, api_key=api_key, timeout=timeout)

    def complete(self, model: str | None, messages: list[dict[str, str]], *, max_tokens: int,
                 temperature: float, seed: int, schema: dict | None = None) -> Reply:
        """`schema`: the text must be JSON matching it (TGI's `grammar` of type json)."""
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled

        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        if schema is not None:
            sampling["grammar"] = {"type": "json", "value": schema}
        started = time.perf_counter()
        try:
            out = self._client.text_generation(
                render_chat(messages), adapter_id=model or None, details=True, max_new_tokens=max_tokens,
                seed=seed, **sampling,
            )
        except OfflineModeIsEnabled:
            raise EndpointError("HF_HUB_OFFLINE is set, and huggingface_hub then refuses every request, even to "
                                f"{self.url}; unset it for the TGI route or use --api openai", retryable=False) from None
        except InferenceTimeoutError as exc:
            raise EndpointError(f"{self.url}: timeout: {exc}", retryable=True) from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise EndpointError(f"{self.url} answered {status}: {str(exc)[:300]}",
                                retryable=status is None or retryable_status(status), status=status) from None
        except (httpx.HTTPError, OSError) as exc:
            raise EndpointError(f"{self.url}: {type(exc).__name__}: {exc}", retryable=True) from None
        details = out.details
        return Reply(
            text=out.generated_text, latency_s=time.perf_counter() - started,
            completion_tokens=getattr(details, "generated_tokens", None),
            energy_joules=_float_or_none(getattr(details, "energy_joules", None)),
            energy_source=getattr(details, "energy_source", None),
            finish_reason=getattr(details, "finish_reason", None),
        )


def make_chat(api: str, url: str, api_key: str | None = None, timeout: float = 120) -> OpenAIChat | TGIChat:
    if api == "openai":
        return OpenAIChat(url, api_key, timeout)
    if api == "tgi":
        return TGIChat(url, api_key, timeout)
    raise ValueError(f"unknown api {api!r}: use openai or tgi")

