"""Settings of the train commands, built once in the entry point (flags > SUPPORTKIT_TRAIN_* env > defaults)."""

from pathlib import Path
from typing import Optional

from pydantic_settings import SettingsConfigDict

from common.settings import KitSettings


class TrainSettings(KitSettings):
    model_config = SettingsConfigDict({**KitSettings.model_config, "env_prefix": "SUPPORTKIT_TRAIN_"})

    out: Path = Path("adapters")  # the adapter store runs are published into
    work_dir: Optional[Path] = None  # checkpoints; default: <cache>/runs/<name>-<config hash>
