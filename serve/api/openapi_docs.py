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
