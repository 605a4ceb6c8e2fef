"""Training configuration: one YAML file per run, or a sweep file (defaults + a list of runs).

A sweep file picks one run with `--index N` (or the JOB_COMPLETION_INDEX that a Kubernetes Indexed Job
sets); `key=value` overrides from the command line go on top, parsed as YAML scalars/lists.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.adapter_store import NAME_PATTERN

KNOWN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODULE_SETS = {"qv": ["q_proj", "v_proj"], "qkvo": ["q_proj", "k_proj", "v_proj", "o_proj"], "all": list(KNOWN_MODULES)}


class ConfigError(ValueError):
    """A configuration file, index or override is invalid; the message says which and why."""


class TrainConfig(BaseModel):
    """One training run. Every field has a default, so a config file only states what it changes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("adapter", pattern=NAME_PATTERN.pattern, description="adapter directory name in the store")
    model: str | None = Field(None, description="local HF model directory; None = the embedded default model")
    data: str = Field("offline", description="dataset dir / conversations.jsonl, or 'offline' to compose it in memory")
    offline_per_scenario: int = Field(1, ge=1, description="offline data: conversations per scenario")
    offline_scenarios: int | None = Field(None, ge=1, description="offline data: seeded sample of N scenarios")
    data_seed: int = Field(0, description="offline data: generation and split seed")
    max_train_examples: int | None = Field(None, ge=1, description="cap on training conversations (seeded sample)")
    max_val_examples: int | None = Field(64, ge=1, description="cap on validation conversations (seeded sample)")
    max_length: int = Field(512, ge=16, description="longest tokenized conversation; longer ones are truncated")
    knowledge: str | None = Field(None, description="ground the prompts: 'kit' (the glossary) or a knowledge-base "
                                  "folder/file; None = ungrounded. The server grounds the adapter the same way")
    init_adapter: str | None = Field(None, description="continue training this PEFT adapter directory (same r, "
                                     "alpha and modules) instead of starting from fresh LoRA weights")
    knowledge_k: int = Field(2, ge=1, le=8, description="knowledge-base entries rendered into each prompt")

    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(default_factory=lambda: list(MODULE_SETS["qv"]),
                                      description="linear modules that get LoRA, or one of qv / qkvo / all")

    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides epochs")
    max_train_minutes: float | None = Field(None, gt=0, description="stop (evaluate and save) after this much "
                                            "training time even if steps remain; the manifest records the steps done")
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    eval_steps: int = Field(50, ge=1, description="evaluate (val loss, perplexity) every N steps")
    eval_on_start: bool = Field(False, description="evaluate before the first step too: the curve then starts at "
                                "the untrained model's validation loss (fresh LoRA weights change nothing)")
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps (resume after a kill)")
    logging_steps: int = Field(5, ge=1)
    seed: int = 42
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="auto: bf16 on a GPU or a CPU with bf16 instructions, else fp32")
    select_logits: bool = Field(True, description="compute the LM head only where the loss is (assistant tokens)")
    country_iso_code: str = Field("FRA", min_length=3, max_length=3, description="grid carbon intensity (codecarbon)")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = MODULE_SETS.get(v, [m.strip() for m in v.split(",") if m.strip()])
        return v

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        unknown = [m for m in self.target_modules if m not in KNOWN_MODULES]
        if unknown or not self.target_modules:
            raise ValueError(f"target_modules {unknown or '[]'} not among {', '.join(KNOWN_MODULES)}")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError("target_modules has duplicates")
        return self

    def fingerprint(self) -> str:
        """Identity of everything that changes the trained weights (used to name the checkpoint directory)."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


class SweepFile(BaseModel):
    """A sweep: shared defaults and a list of runs, each overriding some of them (and naming itself)."""

    model_config = ConfigDict(extra="forbid")
    defaults: dict[str, Any] = Field(default_factory=dict)
    runs: list[dict[str, Any]] = Field(min_length=1)

    def configs(self) -> list[TrainConfig]:
        out = []
        for i, run in enumerate(self.runs):
            try:
                out.append(TrainConfig.model_validate({**self.defaults, **run}))
            except ValidationError as exc:
                raise ConfigError(f"run {i} ({run.get('name', '?')}): {_first_error(exc)}") from exc
        names = [c.name for c in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"run names must be unique; repeated: {', '.join(dupes)}")
        return out


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: {exc}") from exc
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (a run config, or defaults + runs)")
    return data


def is_sweep(data: dict) -> bool:
    return "runs" in data


def load_sweep(path: str | Path) -> list[TrainConfig]:
    data = read_yaml(path)
    if not is_sweep(data):
        raise ConfigError(f"{path} is not a sweep file (no `runs:` list)")
    try:
        return SweepFile.model_validate(data).configs()
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from exc


def load_config(path: str | Path, index: int | None = None, overrides: list[str] = ()) -> TrainConfig:
    """The config of one run: a plain config file, or run `index` of a sweep file; then overrides."""
    data = read_yaml(path)
    extra = parse_overrides(list(overrides))
    if is_sweep(data):
        if index is None and os.environ.get("JOB_COMPLETION_INDEX", "").strip():
            index = int(os.environ["JOB_COMPLETION_INDEX"])
        if index is None:
            raise ConfigError(f"{path} is a sweep: pass --index N (or set JOB_COMPLETION_INDEX)")
        try:
            sweep = SweepFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {_first_error(exc)}") from exc
        if not 0 <= index < len(sweep.runs):
            raise ConfigError(f"index {index} is out of range: {path} has runs 0..{len(sweep.runs) - 1}")
        merged = {**sweep.defaults, **sweep.runs[index], **extra}
    else:
        if index is not None:
            raise ConfigError(f"{path} is a single run config; --index applies to sweep files only")
        merged = {**data, **extra}
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from exc
