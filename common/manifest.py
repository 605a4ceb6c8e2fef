"""The adapter manifest (manifest.json beside a PEFT adapter): what was trained, on what, how, at what cost.

Every section but `name` is optional, so that adapters made by other tools (no manifest, or a partial one)
still load; the kit's own training fills them all.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
LOSSES_FILE = "losses.json"  # {"train": [[step, loss], ...], "val": [[step, loss], ...]}, beside the manifest
EnergySource = Literal["nvml", "rapl", "estimate", "unknown"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class BaseModelRef(_Section):
    name: str
    fingerprint: str | None = None


class LoraSettings(_Section):
    r: int
    alpha: float
    dropout: float = 0.0
    target_modules: list[str]


class TrainingSettings(_Section):
    learning_rate: float | None = None
    epochs: float | None = None
    steps: int | None = None
    seed: int | None = None
    dataset_fingerprint: str | None = None


class Metrics(_Section):
    train_loss: float | None = None
    val_loss: float | None = None
    perplexity: float | None = None


class Energy(_Section):
    """kWh by component (cpu, gpu, ram, total), and where each figure came from."""

    kwh: dict[str, float] = Field(default_factory=dict)
    sources: dict[str, EnergySource] = Field(default_factory=dict)
    duration_s: float | None = None
    co2_kg: float | None = None
    hardware: dict[str, str] = Field(default_factory=dict)


class AdapterManifest(_Section):
    name: str
    version: str = "1"
    base_model: BaseModelRef | None = None
    lora: LoraSettings | None = None
    training: TrainingSettings | None = None
    metrics: Metrics | None = None
    energy: Energy | None = None
    system_prompt: str | None = None
    chat_template: str | None = None
    # Grounded training (common.knowledge.manifest_section): the knowledge base's fingerprint and k. The server
    # grounds an adapter exactly when this is present.
    knowledge: dict | None = None
    command: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    started_at: str | None = None
    finished_at: str | None = None


def read_manifest(adapter_dir: str | Path) -> AdapterManifest | None:
    """The manifest beside an adapter, or None when there is none. A malformed one raises ValueError."""
    path = Path(adapter_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return AdapterManifest.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid adapter manifest: {exc}") from exc


def write_manifest(adapter_dir: str | Path, manifest: AdapterManifest) -> Path:
    """Write atomically (temp file + rename) so that readers never see half a manifest."""
    path = Path(adapter_dir) / MANIFEST_FILE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_losses(adapter_dir: str | Path) -> dict[str, list[list[float]]] | None:
    """An adapter's loss curves (LOSSES_FILE), or None when it has none (made by another tool, or older)."""
    try:
        data = json.loads((Path(adapter_dir) / LOSSES_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
