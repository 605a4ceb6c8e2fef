"""The support-desk demo page, mounted in the serving app at /demo (Gradio imports stay inside `mount_demo`)."""

from __future__ import annotations

from pathlib import Path

STYLE = Path(__file__).resolve().parent / "style.css"
PATH = "/demo"


def mount_demo(app, settings):
    """Mount the page on `app`; handlers read `app.state` (built by the lifespan) at request time."""
    import gradio as gr

    from serve.demo.page import build_page

    page = build_page(lambda: app.state)
    theme = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
                           font=["system-ui", "Segoe UI", "Roboto", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    # Behind a path prefix the app's RootPath middleware puts the prefix into each request's URL, from which
    # Gradio builds the page's links; passing root_path here would make the mounted app expect it in paths.
    return gr.mount_gradio_app(app, page, path=PATH, theme=theme, css_paths=[STYLE],
                               footer_links=["api"], run_history=False, ssr_mode=False, mcp_server=False)
