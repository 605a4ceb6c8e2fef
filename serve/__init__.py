"""Serving: engine, adapter registry, chat service, FastAPI app, Gradio demo, metrics."""

__version__ = "0.1.0"
