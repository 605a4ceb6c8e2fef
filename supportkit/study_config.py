"""Study profiles (supportkit/study_profiles.yaml or a file of the same shape) and the study's directory layout."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

HERE = Path(__file__).parent
PROFILES = HERE / "study_profiles.yaml"
TRAIN_CONFIGS = HERE.parent / "train" / "configs"
EVAL_CONFIGS = HERE.parent / "eval" / "configs"


class StudyError(RuntimeError):
    """The study cannot go on; the message says why and what to do. Finished steps are kept for a re-run."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataProfile(_Strict):
    generator: Literal["offline", "endpoint"] = "offline"
    scenarios: int | None = Field(None, ge=10)  # seeded sample of the scenario grid; None = all
    per_scenario: int = Field(1, ge=1)
    seed: int = 0
    endpoint: str | None = None  # endpoint generator: base URL, served model name, route
    model: str | None = None
    api: Literal["openai", "tgi"] = "openai"
    concurrency: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _endpoint(self):
        if self.generator == "endpoint" and not (self.endpoint and self.model):
            raise ValueError("the endpoint generator needs `endpoint` (base URL) and `model`")
        return self


class SweepProfile(_Strict):
    file: str = "sweep.yaml"
    only: list[int] | None = None
    lr_scale: float = Field(1.0, gt=0)
    overrides: list[str] = Field(default_factory=list)

    def path(self) -> Path:
        p = Path(self.file)
        return p if p.is_absolute() or p.is_file() else TRAIN_CONFIGS / p


class ServeProfile(_Strict):
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    startup_timeout_s: float = Field(900, gt=0)  # loading a model on a busy CPU takes a while


class EvalProfile(_Strict):
    panel: str = "eval:panel-local.yaml"
    questions: int = Field(20, ge=1)
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(600, gt=0)

    def panel_path(self) -> Path:
        if self.panel.startswith("eval:"):
            return EVAL_CONFIGS / self.panel.removeprefix("eval:")
        p = Path(self.panel)
        return p if p.is_absolute() or p.is_file() else HERE / p


class StudyProfile(_Strict):
    name: str = ""
    model: str | None = None  # None: the embedded default model; "tiny": common.tiny's Qwen2 (tests)
    data: DataProfile = DataProfile()
    sweep: SweepProfile = SweepProfile()
    serve: ServeProfile = ServeProfile()
    eval: EvalProfile = EvalProfile()


def load_profile(name: str, path: Path | None = None) -> StudyProfile:
    path = Path(path) if path else PROFILES
    if not path.is_file():
        raise StudyError(f"profile file not found: {path}")
    try:
        profiles = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise StudyError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(profiles, dict) or name not in profiles:
        known = ", ".join(profiles) if isinstance(profiles, dict) else "none"
        raise StudyError(f"no profile {name!r} in {path} (profiles: {known})")
    try:
        return StudyProfile.model_validate({**profiles[name], "name": name})
    except ValidationError as exc:
        e = exc.errors()[0]
        raise StudyError(f"profile {name!r} in {path}: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None


class Layout:
    """Where each step keeps its results inside the study's output directory."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.state = self.out / "study-state.json"  # profile, port: a re-run must match them
        self.model = self.out / "model"  # the tiny model of the test profile
        self.data = self.out / "data"
        self.store = self.out / "adapters"
        self.work = self.out / "work"  # training checkpoints, one directory per configuration
        self.eval = self.out / "eval"
        self.server_log = self.out / "server.log"
        self.report = self.out / "report"
