"""`supportkit serve`: every option is also an environment variable (SUPPORTKIT_SERVE_*)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()


@app.command()
def serve(
    model: Annotated[str | None, typer.Option(help="Base model directory (default: embedded Gemma 3 270M)")] = None,
    adapters: Annotated[Path | None, typer.Option(help="Adapter store directory (default: the kit's shipped adapters)")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000]")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    weights: Annotated[str | None, typer.Option(help="bf16 | int8 | int4: quantized kernels for small-batch decode (CPU)")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Requests decoded together")] = None,
    engine: Annotated[str | None, typer.Option(help="local | tgi | lorax | vllm (a remote engine at --engine-url)")] = None,
    engine_url: Annotated[str | None, typer.Option(help="Remote engine base URL (vLLM: http://host:port/v1)")] = None,
    knowledge: Annotated[Path | None, typer.Option(help="Knowledge base for grounded adapters: a folder/file of .yaml/.jsonl/.md entries (default: the kit's glossary)")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
):
    """Serve the base model and the adapter store over OpenAI- and TGI-compatible HTTP APIs."""
    import logging
    import signal
    import sys

    import uvicorn
    from pydantic import ValidationError
    from rich.console import Console

    from common.log_redaction import install_log_redaction
    from common.models import ModelError, resolve_model_dir
    from common.redact import Redactor
    from serve.settings import ServeSettings

    console = Console(stderr=True)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServeSettings.from_cli(model=model, adapters=adapters, host=host, port=port, dtype=dtype,
                                          device=device, weights=weights, max_batch_size=max_batch_size, engine=engine,
                                          engine_url=engine_url, knowledge=knowledge)
        if settings.engine == "local":
            model_dir = resolve_model_dir(settings.model)
        else:  # a remote engine needs only the config and tokenizer here
            from serve.engine.remote import check_prompt_dir

            if not settings.engine_url:
                console.print(f"[red]error:[/red] --engine {settings.engine} needs --engine-url")
                raise typer.Exit(2)
            model_dir = check_prompt_dir(settings.model) if settings.model else resolve_model_dir(None)
    except ValidationError as exc:
        console.print(f"[red]invalid setting:[/red] {exc}")
        raise typer.Exit(2)
    except ModelError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    install_log_redaction(Redactor(settings.redact_account_patterns))
    if not settings.adapters.is_dir():
        console.print(f"[yellow]adapter store {settings.adapters} does not exist; serving the base model only[/yellow]")

    from common.knowledge import KnowledgeError
    from serve.app import create_app

    # uvicorn stops accepting, lets in-flight requests finish (up to the grace period), then re-raises SIGTERM
    # at the end; with this handler the process then exits 0 rather than dying by the signal (exit 143).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Keep-alive longer than the usual proxy/load-balancer idle timeout (60 s): with uvicorn's default of 5 s,
    # a client or gateway can send on a connection the server is closing, and the request is lost.
    try:
        application = create_app(settings, model_dir)
    except KnowledgeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    uvicorn.run(application, host=settings.host, port=settings.port, log_level=log_level,
                timeout_graceful_shutdown=30, timeout_keep_alive=75)
