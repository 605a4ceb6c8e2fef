"""What /openapi.json says the responses look like, so that clients and fuzzers can check them.

The routes return plain JSONResponse / StreamingResponse objects (their bodies are built for each protocol), so
FastAPI cannot infer their schemas; they are declared here: every error status in its protocol's error shape
(TGI `{"error", "error_type"}`, OpenAI `{"error": {...}}`), success bodies with their required fields,
server-sent events where a route streams, and /health's empty 200.
"""

from __future__ import annotations

from fastapi.openapi.utils import get_openapi

_STR, _INT, _NUM = {"type": "string"}, {"type": "integer"}, {"type": "number"}
_NULLABLE_STR = {"type": ["string", "null"]}


def _obj(required: dict, optional: dict | None = None) -> dict:
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


TGI_ERROR = _obj({"error": _STR, "error_type": _STR})
OPENAI_ERROR = _obj({"error": _obj({"message": _STR, "type": _STR}, {"param": _NULLABLE_STR, "code": _NULLABLE_STR})})
ERROR_STATUSES = ("400", "401", "403", "404", "413", "422", "424", "429", "500", "503", "504")

ENERGY = _obj({"joules": {"type": ["number", "null"]}, "source": _STR})
GENERATED = _obj({"generated_text": _STR}, {"details": {"type": ["object", "null"]}})
COMPAT_LIST = {"type": "array", "items": GENERATED, "minItems": 1, "maxItems": 1}
CHAT_COMPLETION = _obj({
    "id": _STR, "object": {"const": "chat.completion"}, "created": _INT, "model": _STR,
    "choices": {"type": "array", "minItems": 1, "items": _obj({
        "index": _INT, "message": _obj({"role": {"const": "assistant"}, "content": _STR}),
        "finish_reason": {"enum": ["stop", "length"]},
    })},
    "usage": _obj({"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT}),
    "energy": ENERGY,
})
COMPLETION = _obj({
    "id": _STR, "object": {"const": "text_completion"}, "created": _INT, "model": _STR,
    "choices": {"type": "array", "minItems": 1, "items": _obj({"index": _INT, "text": _STR, "finish_reason": _STR})},
    "usage": _obj({"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT}),
})
MODEL_LIST = _obj({"object": {"const": "list"}, "data": {"type": "array", "minItems": 1, "items": _obj(
    {"id": _STR, "object": {"const": "model"}}, {"parent": _NULLABLE_STR, "manifest": {"type": "object"}})}})
INFO = _obj({"model_id": _STR, "max_input_tokens": _INT, "max_total_tokens": _INT, "max_batch_size": _INT,
             "adapters": {"type": "array", "items": _STR}, "version": _STR})
ADAPTER = _obj({"name": _STR, "parent": _STR, "rank": _INT, "target_modules": {"type": "array", "items": _STR}})
ADMIN_LIST = _obj({"adapters": {"type": "array", "items": ADAPTER}, "failed": {"type": "object",
                   "additionalProperties": _STR}, "resident": {"type": "array"}})

# Schemathesis checks each server-sent event as {"event", "data", ...}; `data` holds the JSON text.
_SSE = {"text/event-stream": {"schema": _obj({"data": _STR})}}
# (method, path) -> content of its success response
SUCCESS = {
    ("post", "/generate"): {"application/json": {"schema": GENERATED}},
    ("post", "/adapters/{name}/generate"): {"application/json": {"schema": GENERATED}},
    ("post", "/"): {"application/json": {"schema": COMPAT_LIST}, **_SSE},
    ("post", "/adapters/{name}"): {"application/json": {"schema": COMPAT_LIST}, **_SSE},
    ("post", "/generate_stream"): _SSE,
    ("post", "/adapters/{name}/generate_stream"): _SSE,
    ("post", "/v1/chat/completions"): {"application/json": {"schema": CHAT_COMPLETION}, **_SSE},
    ("post", "/adapters/{name}/v1/chat/completions"): {"application/json": {"schema": CHAT_COMPLETION}, **_SSE},
    ("post", "/v1/completions"): {"application/json": {"schema": COMPLETION}, **_SSE},
    ("get", "/v1/models"): {"application/json": {"schema": MODEL_LIST}},
    ("get", "/info"): {"application/json": {"schema": INFO}},
    ("get", "/metrics"): {"text/plain": {"schema": _STR}},
    ("get", "/admin/adapters"): {"application/json": {"schema": ADMIN_LIST}},
    ("post", "/admin/adapters/{name}"): {"application/json": {"schema": ADAPTER}},
    ("delete", "/admin/adapters/{name}"): {"application/json": {"schema": _obj({"unloaded": _STR})}},
    ("get", "/health"): None,  # an empty body, as TGI answers
}


def document(schema: dict) -> dict:
    """Declare each operation's success and error bodies in a generated OpenAPI document (in place)."""
    for path, operations in schema.get("paths", {}).items():
        error = OPENAI_ERROR if "/v1/" in path else TGI_ERROR
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            key = (method, path)
            if key in SUCCESS:
                ok = next((s for s in responses if s.startswith("2")), "200")
                content = SUCCESS[key]
                responses[ok] = {"description": responses.get(ok, {}).get("description", "Successful Response")}
                if content is not None:
                    responses[ok]["content"] = content
            for status in ERROR_STATUSES:
                responses[status] = {"description": "Error", "content": {"application/json": {"schema": error}}}
    schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    return schema


def install(app) -> None:
    """Serve the documented schema at /openapi.json (built once, on first request)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes,
                servers=app.servers or None,
            ))
        return app.openapi_schema

    app.openapi = openapi
