"""The glossary (terms, fault causes, usage contexts) and the scenario grid built from it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_GLOSSARY = CONFIGS / "glossary.yaml"
PROMPTS = CONFIGS / "prompts"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Term(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    term: str
    domain: Literal["fixed", "mobile", "both"]
    definition: str = Field(min_length=20)
    symptom: str
    check: str


class Cause(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str
    explanation: str
    customer: str
    steps: list[str] = Field(min_length=2)
    escalation: str


class Context(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str
    description: str
    openers: list[str] = Field(min_length=1)


class Glossary(_Strict):
    terms: list[Term]
    causes: list[Cause]
    contexts: list[Context]

    @field_validator("terms", "causes", "contexts")
    @classmethod
    def _unique_ids(cls, items):
        ids = [i.id for i in items]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate ids: {', '.join(dupes)}")
        return items


class Scenario(_Strict):
    """One cell of the grid; its id (term.cause.context) is stable as long as the glossary ids are."""

    id: str
    term: Term
    cause: Cause
    context: Context

    def ref(self) -> dict[str, str]:
        """The scenario as stored in a conversation record."""
        return {"term": self.term.id, "cause": self.cause.id, "context": self.context.id}


def load_glossary(path: str | Path | None = None) -> Glossary:
    path = Path(path) if path else DEFAULT_GLOSSARY
    if not path.is_file():
        raise FileNotFoundError(f"glossary file {path} does not exist")
    try:
        return Glossary.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc


def scenarios(glossary: Glossary) -> list[Scenario]:
    """term x cause x context, in glossary order."""
    return [
        Scenario(id=f"{t.id}.{c.id}.{x.id}", term=t, cause=c, context=x)
        for t in glossary.terms for c in glossary.causes for x in glossary.contexts
    ]


def system_prompt(path: str | Path | None = None) -> str:
    return Path(path or PROMPTS / "system.txt").read_text().strip()
