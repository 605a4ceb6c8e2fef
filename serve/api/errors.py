"""Error bodies in each protocol's shape: TGI `{"error", "error_type"}`, OpenAI `{"error": {message, type, ...}}`."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match

from serve.errors import InvalidRequest, ServeError

log = logging.getLogger("supportkit.api")


class TGIRoute(APIRoute):
    """A route of the TGI API (and admin): TGI-shaped errors. Each router says which protocol it speaks with its
    route class; the error handlers read it from the matched route, and /openapi.json from `x-protocol`."""

    protocol = "tgi"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.openapi_extra = {**(self.openapi_extra or {}), "x-protocol": self.protocol}


class OpenAIRoute(TGIRoute):
    protocol = "openai"


def is_openai(request: Request) -> bool:
    """The protocol of the route the request reached; a request that reached none (404) is judged by its path."""
    protocol = getattr(request.scope.get("route"), "protocol", None)
    if protocol is not None:
        return protocol == "openai"
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path.startswith("/v1/")


def openai_error(status: int, message: str, kind: str, param: str | None = None) -> tuple[int, dict]:
    """OpenAI's status and body for an error of `kind` (TGI's error_type names)."""
    if status in (400, 422) and kind in ("validation", "adapter_invalid"):
        status = 400  # OpenAI answers invalid parameters with 400
    openai_type = "invalid_request_error" if status < 500 else "server_error"
    code = {"adapter_not_found": "model_not_found", "overloaded": "rate_limit_exceeded"}.get(kind, kind)
    return status, {"error": {"message": message, "type": openai_type, "param": param, "code": code}}


def tgi_error(message: str, kind: str) -> dict:
    return {"error": message, "error_type": kind}


def error_response(request: Request, status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    if is_openai(request):
        status, body = openai_error(status, message, kind, param)
    else:
        body = tgi_error(message, kind)
    # Overload and unavailability are temporary: tell clients when to try again rather than at once.
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(body, status_code=status, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this request's path."""
    allowed = set()
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.add(method)
    return sorted(allowed)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            return "the request body is not valid JSON", None
        param = param or (".".join(loc) or None)
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request", param


def install(app, metrics_getter) -> None:
    """Register the handlers: every error is JSON in its route's protocol shape, never a traceback."""

    def count(outcome: str) -> None:
        metrics = metrics_getter()
        if metrics:
            metrics.failed(None, outcome)

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError):
        count("error" if exc.status >= 500 or exc.kind == "generation" else "rejected")
        return error_response(request, exc.status, exc.message, exc.kind, exc.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        count("rejected")
        message, param = _validation_message(exc)
        return error_response(request, InvalidRequest.status, message, "validation", param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden",
                413: "payload_too_large"}.get(exc.status_code, "http")
        response = error_response(request, exc.status_code, str(exc.detail), kind)
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        if exc.status_code == 405:  # Starlette names only the first route's methods; a path may have several
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        count("error")
        return error_response(request, 500, f"internal error: {type(exc).__name__}", "internal")
