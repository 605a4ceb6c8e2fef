"""Serving: engine, adapter registry, chat service, FastAPI app, Gradio demo, metrics."""
