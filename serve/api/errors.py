"""Error bodies in each protocol's shape: TGI `{"error", "error_type"}`, OpenAI `{"error": {message, type, ...}}`."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serve.errors import InvalidRequest, ServeError

log = logging.getLogger("supportkit.api")


def is_openai(request: Request) -> bool:
    return "/v1/" in request.url.path


def error_response(request: Request, status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    if is_openai(request):
        if status in (400, 422) and kind in ("validation", "adapter_invalid"):
            status = 400  # OpenAI answers invalid parameters with 400
        openai_type = "invalid_request_error" if status < 500 else "server_error"
        code = {"adapter_not_found": "model_not_found", "overloaded": "rate_limit_exceeded"}.get(kind, kind)
        body = {"error": {"message": message, "type": openai_type, "param": param, "code": code}}
    else:
        body = {"error": message, "error_type": kind}
    # Overload and unavailability are temporary: tell clients when to try again rather than at once.
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(body, status_code=status, headers=headers)


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
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        count("error")
        return error_response(request, 500, f"internal error: {type(exc).__name__}", "internal")
