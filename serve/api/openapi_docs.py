"""/openapi.json from the routes' own models: FastAPI documents each route's request and response models; this
adds, per route, the error body of the protocol its router speaks (for every status the kit answers with) and
the model of each server-sent event where a route streams."""

from __future__ import annotations

from fastapi.openapi.utils import get_openapi

from serve.api.openai_schemas import OpenAIError
from serve.api.tgi_schemas import TGIError

ERROR_STATUSES = ("400", "401", "403", "404", "413", "422", "424", "429", "500", "503", "504")
ERRORS = {"openai": OpenAIError, "tgi": TGIError}


def _schemas(schema: dict, *models) -> None:
    """Put the models' JSON schemas (and the models they use) among the document's components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(js.pop("$defs", {}))
        components[model.__name__] = js


EVENTS: dict[str, type] = {}  # stream event models by name, as `streams` declared them


def streams(event_model, only: bool = False) -> dict:
    """A route's `openapi_extra` saying that it streams `event_model` events (server-sent events): besides its
    JSON answer, or `only`."""
    EVENTS[event_model.__name__] = event_model
    return {"x-stream-event": event_model.__name__, "x-stream-only": only}


def _bound(prop: dict, **bounds) -> None:
    """Put bounds on the branch of a (possibly nullable) property that they apply to."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "integer" and "maximum" in bounds:
            branch["maximum"] = bounds["maximum"]
        if branch.get("type") == "array" and "maxItems" in bounds:
            branch["maxItems"] = bounds["maxItems"]


def server_limits(schema: dict, max_new_tokens: int, max_stop_sequences: int) -> None:
    """The request bounds that are this server's settings (the models cannot know them), so the spec is true."""
    for model in schema.get("components", {}).get("schemas", {}).values():
        props = model.get("properties", {})
        for name in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
            if name in props:
                _bound(props[name], maximum=max_new_tokens)
        if "stop" in props:
            _bound(props["stop"], maxItems=max_stop_sequences)


def document(schema: dict) -> dict:
    """Declare each operation's error bodies and stream events in a generated OpenAPI document (in place)."""
    _schemas(schema, *ERRORS.values(), *EVENTS.values())
    for operations in schema.get("paths", {}).values():
        for op in operations.values():
            responses = op.setdefault("responses", {})
            protocol = op.pop("x-protocol", "tgi")
            event, only = op.pop("x-stream-event", None), op.pop("x-stream-only", False)
            if event is not None:
                ok = next(s for s in responses if s.startswith("2"))
                content = responses[ok].setdefault("content", {})
                if only:
                    content.pop("application/json", None)
                # Schemathesis checks each event as {"event", "data", ...}: `data` holds one event's JSON text.
                content["text/event-stream"] = {
                    "schema": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}},
                    "x-event-schema": {"$ref": f"#/components/schemas/{event}"},
                }
            error = {"$ref": f"#/components/schemas/{ERRORS[protocol].__name__}"}
            for status in ERROR_STATUSES:
                responses[status] = {"description": "Error", "content": {"application/json": {"schema": error}}}
    for unused in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(unused, None)
    return schema


def install(app, settings) -> None:
    """Serve the documented schema at /openapi.json (built once, on first request)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = document(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes,
                servers=app.servers or None,
            ))
            server_limits(schema, settings.max_new_tokens, settings.max_stop_sequences)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
