"""Dependencies the routes declare: state built once in the lifespan, reached from app.state."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve.chat import ChatService
from serve.engine.interface import Engine
from serve.metrics import Metrics
from serve.registry import AdapterRegistry
from serve.settings import ServeSettings


def _state(name: str):
    def get(request: Request):
        return getattr(request.app.state, name)

    return get


SettingsDep = Annotated[ServeSettings, Depends(_state("settings"))]
EngineDep = Annotated[Engine, Depends(_state("engine"))]
ChatDep = Annotated[ChatService, Depends(_state("chat"))]
RegistryDep = Annotated[AdapterRegistry, Depends(_state("registry"))]
MetricsDep = Annotated[Metrics, Depends(_state("metrics"))]

_bearer = HTTPBearer(auto_error=False)


def require_admin(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Admin routes are off without a configured token; the comparison is constant-time."""
    token = settings.token()
    if token is None:
        raise HTTPException(403, "the admin API is disabled: set SUPPORTKIT_ADMIN_TOKEN to enable it")
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


AdminDep = Depends(require_admin)
