"""The study's steps: data, training runs, one server, the judge panel. Each step reuses what is already done.

Each step is called through its own plain entry point (train.data.job.generate_dataset, train.job.run_job,
eval.job.run_job), the one its command calls, so that the study resumes exactly as they do: a finished adapter
(manifest in the store) is skipped, a killed run resumes from its last checkpoint, and the eval job asks only the
answers and judgments not yet on file. Settings are passed as arguments, never through the environment.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

from supportkit.study_config import Layout, StudyError, StudyProfile

Log = Callable[[str], None]


def prepare_model(profile: StudyProfile, layout: Layout, model_override: str | None) -> Path:
    """The base model directory: --model, else the profile's, else the embedded default model."""
    from common.models import ModelError, resolve_model_dir

    choice = model_override or profile.model
    if choice == "tiny":
        from common.tiny import build_tiny_model

        if not (layout.model / "config.json").is_file():
            build_tiny_model(layout.model, "qwen2")
        return layout.model
    try:
        path = Path(resolve_model_dir(choice))
    except ModelError as exc:
        raise StudyError(f"{exc} (`supportkit model prepare` writes the default model)") from None
    return path


def generate_data(profile: StudyProfile, layout: Layout, log: Log) -> dict:
    """conversations.jsonl + stats.json in layout.data, through the data step's entry point."""
    import json

    from train.data.job import DataError, GenerateSettings, generate_dataset

    stats = layout.data / "stats.json"
    if stats.is_file() and (layout.data / "conversations.jsonl").is_file():
        log(f"data: reusing {layout.data}")
        return json.loads(stats.read_text())
    d = profile.data
    settings = GenerateSettings(out=layout.data, per_scenario=d.per_scenario, scenarios=d.scenarios, seed=d.seed)
    if d.generator == "offline":
        settings.offline = True
    else:  # the endpoint generator caches every answer in layout.data/cache.jsonl: a re-run pays only once
        settings.endpoint, settings.model, settings.api, settings.concurrency = d.endpoint, d.model, d.api, d.concurrency
    try:
        result = generate_dataset(settings)
    except DataError as exc:
        raise StudyError(f"data: {exc}") from None
    if result.failed:
        raise StudyError(f"data generation did not finish ({len(result.failed)} conversations failed, e.g. "
                         f"{result.failed[0]}); run the study again to generate only what is missing")
    return result.stats


def sweep_configs(profile: StudyProfile, layout: Layout, model_dir: Path) -> list[tuple[int, object, list[str]]]:
    """(index, TrainConfig, overrides) of every run of the profile, through the train step's override mechanism."""
    from train.config import ConfigError, load_config, load_sweep

    path = profile.sweep.path()
    try:
        n = len(load_sweep(path))
        indices = profile.sweep.only if profile.sweep.only is not None else list(range(n))
        out = []
        for i in indices:
            base = [*profile.sweep.overrides, f"model={model_dir}", f"data={layout.data}"]
            cfg = load_config(path, i, base)
            if profile.sweep.lr_scale != 1:
                base.append(f"learning_rate={cfg.learning_rate * profile.sweep.lr_scale:.6g}")
                cfg = load_config(path, i, base)
            out.append((i, cfg, base))
    except ConfigError as exc:
        raise StudyError(str(exc)) from None
    return out


def train_all(profile: StudyProfile, layout: Layout, runs: list, log: Log, progress: bool,
              on_done: Callable[[str, bool], None] = lambda name, reused: None) -> list[str]:
    """Train every run whose adapter is not in the store yet; returns the names trained now."""
    from common.adapter_store import is_published
    from train.job import run_job
    from train.recipe import RecipeError

    trained = []
    path = profile.sweep.path()
    for i, cfg, overrides in runs:
        if is_published(layout.store, cfg.name):
            log(f"train [{i}] {cfg.name}: reusing the adapter in the store")
            on_done(cfg.name, True)
            continue
        log(f"train [{i}] {cfg.name}: r={cfg.r}, alpha={cfg.alpha:g}, modules={'+'.join(m.removesuffix('_proj') for m in cfg.target_modules)}, "
            f"lr={cfg.learning_rate:g}, epochs={cfg.epochs:g}")
        command = shlex.join(["supportkit", "train", "run", "--config", str(path), "--index", str(i),
                              "--out", str(layout.store), "--work-dir", str(layout.work / f"{cfg.name}-{cfg.fingerprint()}"),
                              *overrides])
        try:
            run_job(cfg, layout.store, layout.work / f"{cfg.name}-{cfg.fingerprint()}", command=command, progress=progress)
        except RecipeError as exc:
            raise StudyError(f"training {cfg.name} failed: {exc}") from None
        trained.append(cfg.name)
        on_done(cfg.name, False)
    return trained


def run_eval(profile: StudyProfile, layout: Layout, url: str, targets: list[str], panel: Path, log: Log) -> dict:
    """The eval job against the study's server, on the test split of the study's data."""
    from pydantic import ValidationError

    from eval.job import JobError, run_job
    from eval.judging import JudgingError
    from eval.panel import PanelError
    from eval.questions import QuestionFileError
    from eval.settings import EvalSettings
    from eval.targets import TargetError

    try:
        settings = EvalSettings.from_cli(
            endpoint=url, panel=panel, out=layout.eval, limit=profile.eval.questions,
            questions=[layout.data / "conversations.jsonl"], adapters=layout.store, targets=targets,
            concurrency=profile.eval.concurrency, timeout_s=profile.eval.timeout_s,
        )
        # The local judge of the shipped panels is the study's own server unless the operator configured another.
        return run_job(settings, log=log, panel_defaults={"SUPPORTKIT_JUDGE_URL": url})
    except ValidationError as exc:
        raise StudyError(f"eval settings: {exc}") from None
    except (JobError, JudgingError, PanelError, QuestionFileError, TargetError) as exc:
        raise StudyError(f"eval: {exc}") from None


def move_endpoint(eval_dir: Path, old_url: str, new_url: str) -> bool:
    """The study's server came back on another port: same model, same store, so its stored answers and judgments
    still hold. Point the eval run's record at the new URL, so that the eval job resumes instead of refusing."""
    import json

    run_file = eval_dir / "run.json"
    if old_url == new_url or not run_file.is_file():
        return False
    run = json.loads(run_file.read_text())
    moved = run.get("endpoint") == old_url
    if moved:
        run["endpoint"] = new_url
    for judge in run.get("judges", []):
        if judge.get("url") == old_url:
            judge["url"], moved = new_url, True
    if moved:
        run_file.write_text(json.dumps(run, indent=2) + "\n")
    return moved
