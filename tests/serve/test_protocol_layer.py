"""One protocol layer: /openapi.json comes from the routes' pydantic models, and each router's protocol (not the
URL) decides the shape of its errors."""

from __future__ import annotations

import httpx

from serve.app import create_app
from serve.settings import ServeSettings


def _spec() -> dict:
    return create_app(ServeSettings(), "/unused", engine=object()).openapi()


def test_the_spec_comes_from_the_models():
    spec = _spec()
    ops = {(m, p): op for p, ms in spec["paths"].items() for m, op in ms.items()}

    def ok(method, path, media="application/json"):
        op = ops[method, path]
        return next(v for s, v in op["responses"].items() if s.startswith("2"))["content"][media]

    assert ok("post", "/v1/chat/completions")["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
    assert ok("post", "/v1/chat/completions", "text/event-stream")["x-event-schema"]["$ref"].endswith("/ChatCompletionChunk")
    assert ok("post", "/generate")["schema"] == {"$ref": "#/components/schemas/Generated"}
    assert "application/json" not in ops["post", "/generate_stream"]["responses"]["200"]["content"]
    assert ok("get", "/info")["schema"] == {"$ref": "#/components/schemas/Info"}
    assert ok("get", "/v1/models")["schema"] == {"$ref": "#/components/schemas/ModelList"}
    # Room for fields added later (e.g. `sources`): the documented bodies allow extra properties.
    schemas = spec["components"]["schemas"]
    assert schemas["ChatCompletion"]["additionalProperties"] is True and schemas["Details"]["additionalProperties"] is True
    for (method, path), op in ops.items():
        error = op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
        openai = path.startswith("/v1/") or path.endswith("/v1/chat/completions")
        assert error.endswith("/OpenAIError" if openai else "/TGIError"), (method, path)
        assert not any(k.startswith("x-") for k in op), (method, path)


def test_an_adapter_named_v1_gets_tgi_errors_on_tgi_routes(live_server):
    r = httpx.post(live_server.url + "/adapters/v1/generate", json={"inputs": "hi"}, timeout=30)
    assert r.status_code == 404 and r.json()["error_type"] == "adapter_not_found"
    r = httpx.post(live_server.url + "/adapters/v1/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(live_server.url + "/adapters/v1/generate", json={"inputs": 3}, timeout=30)
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
