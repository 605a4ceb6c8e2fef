"""Settings of the eval job: flags override SUPPORTKIT_EVAL_* variables, which override these defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import KitSettings
from eval.panel import CONFIGS
from eval.questions import DEMO_QUESTIONS


class EvalSettings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="SUPPORTKIT_EVAL_", extra="ignore", case_sensitive=False,
                                      env_ignore_empty=True)

    endpoint: str = "http://127.0.0.1:8000"
    api: Literal["openai", "tgi"] = "openai"
    api_key: SecretStr | None = None  # for endpoints behind a gateway; from the environment only
    panel: Path = CONFIGS / "panel-local.yaml"
    out: Path = Path("eval-out")
    questions: list[Path] = Field(default_factory=lambda: [DEMO_QUESTIONS])
    targets: list[str] | None = None
    adapters: Path | None = None  # adapter store to read manifests from
    limit: int | None = Field(None, ge=1)
    concurrency: int = Field(4, ge=1, le=64)  # answers in flight to the endpoint
    timeout_s: float = Field(600, gt=0)  # per answer: a small model on a busy CPU can take minutes
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(0.5, ge=0)
