"""The FastAPI application: state built once in the lifespan, routers, error handlers, limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import serve
from common.redact import Redactor
from serve.api import admin_routes, completions_routes, errors, openai_routes, openapi_docs, tgi_routes
from serve.api.body_limit import BodyLimit
from serve.api.disconnect import CancelOnDisconnect
from serve.chat import ChatService
from serve.engine.interface import Engine
from serve.feedback import open_store
from serve.handoff import HandoffRules
from serve.metrics import Metrics
from serve.registry import AdapterRegistry
from serve.settings import ServeSettings

log = logging.getLogger("supportkit.serve")


def build_engine(settings: ServeSettings, model_dir) -> Engine:
    if settings.engine != "local":
        from serve.engine.remote_setup import build_remote_engine

        return build_remote_engine(settings, model_dir)
    from serve.engine.local import LocalEngine

    return LocalEngine(
        model_dir, dtype=settings.dtype, device=settings.device, max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue, max_adapters=settings.max_adapters, max_lora_rank=settings.max_lora_rank,
        max_input_tokens=settings.max_input_tokens, max_total_tokens=settings.max_total_tokens,
        prefill_tokens=settings.prefill_tokens, weights=settings.weights, prefix_cache_mb=settings.prefix_cache_mb,
    )


class RootPath:
    """Serve under a public path prefix, as uvicorn's --root-path does, so that the URLs the app builds (the demo
    page's, the API docs') carry it. Works behind proxies that strip the prefix and behind those that keep it."""

    def __init__(self, app, prefix: str):
        self.app, self.prefix = app, "/" + prefix.strip("/")

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if path != self.prefix and not path.startswith(self.prefix + "/"):
                path = self.prefix + path
            scope = {**scope, "root_path": self.prefix, "path": path}
        await self.app(scope, receive, send)


def create_app(settings: ServeSettings, model_dir, engine: Engine | None = None) -> FastAPI:
    """`engine` may be given (tests, a remote engine); else the local engine is built at start-up."""

    from common.knowledge import load_knowledge
    from common.models import cache_dir

    knowledge = load_knowledge(settings.knowledge)  # a broken knowledge base stops the start, with its reason

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        eng = engine or await asyncio.to_thread(build_engine, settings, model_dir)
        eng.start()
        metrics = Metrics(eng, settings.metrics_max_adapters)
        eng.on_finish = metrics.finished
        registry = AdapterRegistry(eng, settings.adapters, metrics)
        await registry.sync(initial=True)
        app.state.settings, app.state.engine, app.state.metrics, app.state.registry = settings, eng, metrics, registry
        app.state.chat = ChatService(eng, settings.system_prompt, HandoffRules.load(settings.handoff_rules), metrics,
                                     knowledge, cache_dir() / "knowledge")
        await asyncio.to_thread(app.state.chat.warm_knowledge)
        app.state.feedback = open_store(settings.feedback_db, Redactor(settings.redact_account_patterns))
        watcher = asyncio.create_task(registry.watch(settings.watch_interval_s)) if settings.watch_interval_s > 0 else None
        log.info("serving %s with adapters %s", eng.name, sorted(eng.adapters()) or "none")
        try:
            yield
        finally:
            if watcher:
                watcher.cancel()
            eng.stop()

    app = FastAPI(
        title="supportkit", version=serve.__version__, lifespan=lifespan,
        description="Telecom support assistant: OpenAI- and TGI-compatible APIs over a base model and LoRA adapters.",
    )
    app.state.metrics = None
    errors.install(app, lambda: app.state.metrics)

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)  # chunked bodies too
    app.add_middleware(CancelOnDisconnect)  # outermost: a client that leaves frees its batch row

    if settings.root_path:
        app.add_middleware(RootPath, prefix=settings.root_path)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.get("/metrics", tags=["monitoring"], response_class=PlainTextResponse)
    async def metrics_endpoint():
        """Prometheus text format."""
        return Response(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(openai_routes.router)
    app.include_router(completions_routes.router)
    app.include_router(admin_routes.router)
    if settings.demo:
        from serve.demo import mount_demo

        mount_demo(app, settings)
    app.include_router(tgi_routes.router)  # last: its `/adapters/{name}` compat route is the most general
    openapi_docs.install(app, settings)
    return app
