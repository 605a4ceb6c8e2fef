"""The judge panel, configured in YAML: LLM judges (OpenAI-compatible or TGI endpoints) and a reference judge.

`${VAR}` and `${VAR:-default}` in the YAML are expanded from the environment, so endpoints and model
names can come from Helm values. API keys are never written in the file: `api_key_env` names the variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIGS = Path(__file__).parent / "configs"
RUBRIC_CRITERIA = ("correctness", "actionability", "escalation", "empathy", "concision", "terminology")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class PanelError(ValueError):
    """A panel file that cannot be used; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Strict):
    """USD per million tokens, for judges that bill (hosted APIs); 0 for on-prem judges."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


class JudgeConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["llm", "reference"]
    # LLM judges
    api: Literal["openai", "tgi"] = "openai"
    url: str | None = None
    model: str | None = None  # empty: the base model listed by the judge endpoint's /v1/models
    api_key_env: str | None = None
    protocols: list[Literal["rubric", "pairwise"]] = ["rubric", "pairwise"]
    # criteria: a score per rubric criterion; overall: one reference-guided score (small judges: short verdicts)
    rubric_verdict: Literal["criteria", "overall"] = "criteria"
    # ask for verdicts constrained to their JSON schema (OpenAI response_format / TGI grammar); an endpoint that
    # refuses them is then asked without
    structured: bool = True
    concurrency: int = Field(2, ge=1, le=64)
    max_retries: int = Field(4, ge=0, le=20)  # endpoint errors, with exponential backoff
    parse_retries: int = Field(2, ge=0, le=10)  # malformed verdicts, asked again with another seed
    backoff_s: float = Field(0.5, ge=0)
    timeout_s: float = Field(120, gt=0)
    max_tokens: int = Field(384, ge=16)
    temperature: float = Field(0.0, ge=0)
    seed: int = 0
    rubric_prompt: str = "prompts/rubric.md"
    pairwise_prompt: str = "prompts/pairwise.md"
    price: Price = Price()
    validity: str | None = None  # a judge_validity.json from `eval validate-judge`: its figures go in the report
    # reference judge
    method: Literal["embedding", "rouge"] = "embedding"
    tie_margin: float = Field(0.02, ge=0)  # similarity differences below this count as a tie

    @model_validator(mode="after")
    def _needs_url(self):
        if self.kind == "llm" and not self.url:
            raise ValueError(f"LLM judge {self.name!r} needs a `url`")
        return self

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class Decoding(_Strict):
    """Fixed decoding for the answers, so that a re-run asks the same question the same way."""

    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    seed: int = 0


class PanelConfig(_Strict):
    anchor: str = "base"  # pairwise battles are each target vs this one; `base` = the endpoint's base model
    decoding: Decoding = Decoding()
    bootstrap: int = Field(200, ge=10, le=10000)
    judges: list[JudgeConfig]
    source_dir: Path = CONFIGS  # prompt paths are relative to the panel file

    @model_validator(mode="after")
    def _unique(self):
        names = [j.name for j in self.judges]
        if len(set(names)) != len(names):
            raise ValueError(f"judge names must be unique: {names}")
        if not self.judges:
            raise ValueError("the panel needs at least one judge")
        return self

    def locate(self, relative: str) -> Path:
        """A file named in the panel: relative to the panel file, else to the current directory."""
        path = self.source_dir / relative
        return path if path.exists() else Path(relative)

    def prompt(self, relative: str) -> str:
        for base in (self.source_dir, CONFIGS):
            path = (base / relative).resolve()
            if path.is_file():
                return path.read_text(encoding="utf-8")
        raise PanelError(f"judge prompt not found: {relative} (looked in {self.source_dir} and {CONFIGS})")


def expand_env(text: str, defaults: Mapping[str, str] | None = None) -> str:
    """`${VAR}` from the environment, else from `defaults`, else the `:-default` written in the file."""
    defaults = defaults or {}
    return _VAR.sub(lambda m: os.environ.get(m.group(1)) or defaults.get(m.group(1)) or (m.group(2) or ""), text)


def load_panel(path: Path, defaults: Mapping[str, str] | None = None) -> PanelConfig:
    """The panel file, validated; `defaults` fill its `${VAR}`s that the environment leaves unset."""
    path = Path(path)
    if not path.is_file():
        raise PanelError(f"panel file not found: {path}")
    try:
        data = yaml.safe_load(expand_env(path.read_text(encoding="utf-8"), defaults)) or {}
        data.setdefault("source_dir", str(path.parent.resolve()))
        panel = PanelConfig.model_validate(data)
    except yaml.YAMLError as exc:
        raise PanelError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise PanelError(f"{path}: {exc}") from None
    for judge in panel.judges:
        if judge.kind == "llm":
            for protocol in judge.protocols:
                panel.prompt(judge.rubric_prompt if protocol == "rubric" else judge.pairwise_prompt)
    return panel
