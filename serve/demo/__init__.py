"""The support-desk demo page, mounted in the serving app at /demo (Gradio imports stay inside `mount_demo`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from pathlib import Path

STYLE = Path(__file__).resolve().parent / "style.css"
PATH = "/demo"
IDLE_POLL_S = 0.02


def mount_demo(app, settings):
    """Mount the page on `app`; handlers read `app.state` (built by the lifespan) at request time.

    Behind a path prefix the app's RootPath middleware puts the prefix into each request's URL, from which
    Gradio builds the page's links (passing root_path to Gradio would make it expect the prefix in paths).
    """
    import gradio as gr
    from starlette.routing import Mount

    from serve.demo.page import build_page

    page = build_page(lambda: app.state)
    theme = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
                           font=["system-ui", "Segoe UI", "Roboto", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    gr.mount_gradio_app(app, page, path=PATH, theme=theme, css_paths=[STYLE], footer_links=["api"],
                        run_history=False, ssr_mode=False, mcp_server=False)
    mounted = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == PATH)
    # Gradio's queue polls every 1 ms when idle (10 ms for progress): ~5% of a core per idle server. A page
    # event waiting up to 20 ms is not felt beside a model's reply.
    page._queue.sleep_when_free = IDLE_POLL_S
    page._queue.progress_update_sleep_when_free = 5 * IDLE_POLL_S
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state:
            _end_streams_on_signal(mounted.stop_event)
            yield state

    app.router.lifespan_context = lifespan
    return app


def _end_streams_on_signal(stop_event) -> None:
    """Each open page holds a heartbeat stream that only ends on Gradio's stop event; a graceful shutdown waits
    for open connections before the lifespan ends, so the event is set as soon as the server is told to stop."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            loop.call_soon_threadsafe(stop_event.set)
            previous(signum, frame)

        signal.signal(sig, handler)
