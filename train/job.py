"""One training job end to end: energy tracking around the recipe, then the adapter directory, published."""

from __future__ import annotations

import shlex
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from common.adapter_store import publish, staging_dir
from train.config import TrainConfig
from train.energy_report import CSV_NAME, JSON_NAME, RunEnergy
from train.outputs import CONFIG_NAME, CURVES_NAME, build_manifest, plot_losses, write_losses


def default_work_dir(cfg: TrainConfig) -> Path:
    """Checkpoints live outside the store, per configuration, so a re-run of the same config resumes."""
    from common.models import cache_dir

    return cache_dir() / "runs" / f"{cfg.name}-{cfg.fingerprint()}"


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it again (`supportkit ...`, whichever way it was launched)."""
    argv = list(sys.argv if argv is None else argv)
    args = argv[1:]
    return shlex.join(["supportkit", *args])


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_job(cfg: TrainConfig, store: Path, work_dir: Path | None = None, command: str | None = None,
            progress: bool = True, callbacks=()) -> Path:
    from train.recipe import pick_device, train

    store = Path(store)
    work_dir = Path(work_dir) if work_dir else default_work_dir(cfg)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / CONFIG_NAME).write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    started = now()
    stage = staging_dir(store, cfg.name)
    energy_dir = work_dir / f"energy-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    meter = RunEnergy(energy_dir, pick_device(), cfg.country_iso_code, cfg.name).start()
    try:
        result = train(cfg, work_dir, stage, progress=progress, callbacks=callbacks)
        energy = meter.stop()
        for name in (CSV_NAME, JSON_NAME):
            if (energy_dir / name).is_file():
                shutil.copy(energy_dir / name, stage / name)
        modules = ",".join(m.removesuffix("_proj") for m in cfg.target_modules)
        plot_losses(result.log_history, stage / CURVES_NAME, f"{cfg.name}: r={cfg.r}, {modules}")
        write_losses(result.log_history, stage)
        shutil.copy(work_dir / CONFIG_NAME, stage / CONFIG_NAME)
        manifest = build_manifest(cfg, result, energy, command or command_line(), started, now())
        from common.manifest import write_manifest

        write_manifest(stage, manifest)
        (stage / "README.md").unlink(missing_ok=True)  # peft's empty model-card template; the manifest says it all
        for f in stage.iterdir():
            f.chmod(0o644)  # readable by a server running as another user (mkstemp files are 0600)
        return publish(stage, store, cfg.name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
