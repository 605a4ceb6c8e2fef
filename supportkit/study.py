"""`supportkit study`: data -> the sweep's adapters -> one server -> the judge panel -> one report.

Every step keeps its results in the output directory and reuses them on a re-run, so a study that was
interrupted continues where it stopped (finished adapters, answers and judgments are not redone).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def study(
    profile: Annotated[str, Opt(help="laptop (2-core CPU, ~45 min), gpu (the study's scale), mini (tests)")] = "laptop",
    out: Annotated[Optional[Path], Opt(help="Output directory (default: ./study-PROFILE); a re-run in it continues")] = None,
    model: Annotated[Optional[str], Opt(help="Base model directory (default: the profile's; the embedded model)")] = None,
    panel: Annotated[Optional[Path], Opt(help="Judge panel YAML (default: the profile's)")] = None,
    questions: Annotated[Optional[int], Opt(min=1, help="Test questions asked (default: the profile's)")] = None,
    only: Annotated[Optional[str], Opt(help="Sweep runs to include, e.g. 0-5 or 0,3,5 (default: the profile's)")] = None,
    port: Annotated[Optional[int], Opt(help="Loopback port of the study's server (default: a free one, kept for re-runs)")] = None,
    profiles: Annotated[Optional[Path], Opt(help="Profiles file (default: supportkit/study_profiles.yaml)")] = None,
    progress: Annotated[bool, Opt(help="Training progress bars")] = True,
    report_from: Annotated[Optional[Path], Opt(help="Only write the report from an existing eval directory (with --store)")] = None,
    store: Annotated[Optional[Path], Opt(help="Adapter store of --report-from (the trained configurations' manifests)")] = None,
) -> None:
    """Run the whole LoRA study in one command and write report.md, report.html, study.json and plots."""
    from rich.console import Console

    from supportkit.study_config import StudyError, load_profile

    console = Console(stderr=True)
    try:
        if report_from:
            files = report_only(report_from, store, out or Path("study-report"))
            for path in files.values():
                typer.echo(str(path))
            return
        prof = load_profile(profile, profiles)
        if questions:
            prof.eval.questions = questions
        if only:
            prof.sweep.only = parse_indices(only)
        if panel:
            prof.eval.panel = str(panel.resolve())
        if not prof.eval.panel_path().is_file():
            raise StudyError(f"panel file not found: {prof.eval.panel_path()}")
        files = run_study(prof, out or Path(f"study-{profile}"), model, port, progress, console)
    except StudyError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1)
    for path in files.values():
        typer.echo(str(path))


def report_only(eval_dir: Path, store: Path | None, out: Path) -> dict[str, Path]:
    """The report of a study whose steps ran elsewhere (e.g. the chart's data, training and eval Jobs)."""
    from common.adapter_store import is_published
    from supportkit.study_config import StudyError
    from supportkit.study_report import write_report

    if not store or not store.is_dir():
        raise StudyError("--report-from needs --store DIR, the adapter store the eval job judged")
    if not (eval_dir / "ranking.json").is_file():
        raise StudyError(f"{eval_dir} holds no eval run (ranking.json is missing; `supportkit eval report` writes it)")
    run = json.loads((eval_dir / "run.json").read_text())
    names = [t["name"] for t in run["targets"] if not t["is_base"] and is_published(store, t["name"])]
    base = next((t["name"] for t in run["targets"] if t["is_base"]), "?")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"profile": "report-only", "model_name": base, "data": {}, "timings": {}}
    if (out / "study.json").is_file():  # re-rendering a study's report: keep what its run recorded
        old = json.loads((out / "study.json").read_text())
        meta.update({k: old[k] for k in ("profile", "profile_settings", "model_dir", "model_name", "data", "timings",
                                         "started_at")
                     if k in old})
    meta["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return write_report(out.resolve(), eval_dir.resolve(), store.resolve(), names, meta)


def parse_indices(text: str) -> list[int]:
    """`0-5`, `0,3,5` or a mix, in the given order, without repeats."""
    from supportkit.study_config import StudyError

    picked: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, sep, hi = part.partition("-")
        try:
            values = range(int(lo), int(hi) + 1) if sep else [int(part)]
        except ValueError:
            raise StudyError(f"--only {text!r}: expected indices like 0-5 or 0,3,5") from None
        picked += [v for v in values if v not in picked]
    if not picked:
        raise StudyError(f"--only {text!r} selects no run")
    return picked


def _state(layout, profile_name: str, port: int | None) -> dict:
    """study-state.json: the profile and server port of this directory (kept across re-runs when free)."""
    from common.server_process import free_port, port_is_free
    from supportkit.study_config import StudyError
    from supportkit.study_steps import move_endpoint

    state = json.loads(layout.state.read_text()) if layout.state.is_file() else {}
    if state.get("profile") and state["profile"] != profile_name:
        raise StudyError(f"{layout.out} holds a study of profile {state['profile']!r}; use another --out")
    chosen = port or state.get("port") or free_port()
    if not port_is_free(chosen):
        if port:
            raise StudyError(f"port {port} is in use; pass another --port or none")
        chosen = free_port()
    if state.get("port") and chosen != state["port"]:
        # Same model and store on a new port: the stored answers and judgments stay valid.
        move_endpoint(layout.eval, f"http://127.0.0.1:{state['port']}", f"http://127.0.0.1:{chosen}")
    state.update(profile=profile_name, port=chosen)
    state.setdefault("started_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))  # first start, for the wall time
    layout.out.mkdir(parents=True, exist_ok=True)
    layout.state.write_text(json.dumps(state, indent=2) + "\n")
    return state


def run_study(prof, out: Path, model_override: str | None, port: int | None, progress: bool, console) -> dict[str, Path]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from common.models import model_name
    from common.server_process import ServerNotReady, ServerProcess
    from supportkit.study_config import Layout, StudyError
    from supportkit.study_report import write_report
    from supportkit.study_steps import generate_data, prepare_model, run_eval, sweep_configs, train_all

    layout = Layout(out.resolve())
    state = _state(layout, prof.name, port)
    log = lambda message: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")  # noqa: E731
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def timed(step: str, t_start: float) -> None:
        timings[f"{step}_s"] = time.monotonic() - t_start

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        steps = bar.add_task("study: data, train, serve, eval, report", total=5)
        t = time.monotonic()
        model_dir = prepare_model(prof, layout, model_override)
        data_stats = generate_data(prof, layout, log)
        log(f"data: {data_stats.get('conversations')} conversations, splits {data_stats.get('by_split')}")
        timed("data", t)
        bar.advance(steps)

        t = time.monotonic()
        runs = sweep_configs(prof, layout, model_dir)
        names = [cfg.name for _, cfg, _ in runs]
        training = bar.add_task("adapters", total=len(runs))
        train_all(prof, layout, runs, log, progress, on_done=lambda name, reused: bar.advance(training))
        timed("train", t)
        bar.advance(steps)

        t = time.monotonic()
        log(f"serve: {len(names)} adapters + the base model at http://127.0.0.1:{state['port']} (log: {layout.server_log})")
        server = ServerProcess(["--model", str(model_dir), "--adapters", str(layout.store), "--dtype", prof.serve.dtype],
                               port=state["port"], log=layout.server_log, cwd=Path.cwd())
        try:
            try:
                server.wait_ready(prof.serve.startup_timeout_s, names, poll_s=1)
            except ServerNotReady as exc:
                raise StudyError(str(exc)) from None
            timed("serve", t)
            bar.advance(steps)
            t = time.monotonic()
            log(f"eval: panel {prof.eval.panel_path()}, {prof.eval.questions} test questions")
            run_eval(prof, layout, server.url, ["base", *names], prof.eval.panel_path(), log)
            timed("eval", t)
        finally:
            server.stop(timeout=60)
        bar.advance(steps)

        t = time.monotonic()
        timings["total_s"] = time.monotonic() - t0
        meta = {"profile": prof.name, "profile_settings": prof.model_dump(mode="json"), "model_dir": str(model_dir),
                "model_name": model_name(model_dir), "data": {**data_stats, "generator": prof.data.generator},
                "timings": timings, "started_at": state["started_at"],
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        meta["data"].pop("system_prompt", None)
        files = write_report(layout.out, layout.eval, layout.store, names, meta)
        bar.advance(steps)
    state.setdefault("runs", []).append({"finished_at": meta["finished_at"], "timings": timings})
    layout.state.write_text(json.dumps(state, indent=2) + "\n")
    log(f"report: {files['report_html']}")
    return files
