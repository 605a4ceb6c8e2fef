"""The glossary (terms, fault causes, usage contexts) and the scenario grid built from it.

The grid has two kinds of scenarios: faults (term x cause x context) and informational ones (term x context,
stored with the cause id `info`): the customer asks what something is or how to do something, and there
is no fault to diagnose.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    symptoms: list[str] = Field(default_factory=list)  # more phrasings of the symptom
    causes: list[str] = Field(default_factory=list)  # cause ids, most likely first: the checks without evidence
    questions: list[str] = Field(default_factory=list)  # "how do I ...", "can I ..." about this term
    answer: str | None = None  # the direct answer to `questions`

    @property
    def phrasings(self) -> list[str]:
        return [self.symptom, *self.symptoms]

    @property
    def short(self) -> str:
        """The name without its parenthesis: "ONT (optical network terminal)" -> "ONT"."""
        return self.term.split(" (")[0]

    @model_validator(mode="after")
    def _answer_with_questions(self) -> "Term":
        if bool(self.questions) != bool(self.answer):
            raise ValueError(f"term {self.id}: `questions` and `answer` go together")
        return self


class Cause(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str
    explanation: str
    customer: str
    steps: list[str] = Field(min_length=2)
    escalation: str
    cues: list[str] = Field(default_factory=list)  # more ways a customer gives evidence for this cause
    ask: str  # the one targeted question that tells whether it is this cause
    sign: str  # what a check shows when it is this cause

    @property
    def evidence(self) -> list[str]:
        return [self.customer, *self.cues]


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
        if INFO in ids:
            raise ValueError(f"the id {INFO!r} is reserved for informational scenarios")
        return items

    @model_validator(mode="after")
    def _known_likely_causes(self) -> "Glossary":
        known = {c.id for c in self.causes}
        for t in self.terms:
            unknown = [c for c in t.causes if c not in known]
            if unknown:
                raise ValueError(f"term {t.id}: unknown cause ids in `causes`: {', '.join(unknown)}")
        return self

    def likely_causes(self, term: Term, n: int = 3) -> list[Cause]:
        """The causes an agent checks for this term when the customer gave no evidence, most likely first:
        the term's own list, else a fixed per-term pick, so that every conversation about a term walks the
        same checks."""
        by_id = {c.id: c for c in self.causes}
        ids = term.causes or random.Random(term.id).sample(list(by_id), min(n, len(by_id)))
        return [by_id[i] for i in ids[:n]]


INFO = "info"  # the cause id of informational scenarios


class Scenario(_Strict):
    """One cell of the grid; its id (term.cause.context) is stable as long as the glossary ids are.
    `cause` is None for an informational scenario (id term.info.context)."""

    id: str
    term: Term
    cause: Cause | None
    context: Context

    @property
    def informational(self) -> bool:
        return self.cause is None

    def ref(self) -> dict[str, str]:
        """The scenario as stored in a conversation record."""
        return {"term": self.term.id, "cause": self.cause.id if self.cause else INFO, "context": self.context.id}


def load_glossary(path: str | Path | None = None) -> Glossary:
    path = Path(path) if path else DEFAULT_GLOSSARY
    if not path.is_file():
        raise FileNotFoundError(f"glossary file {path} does not exist")
    try:
        return Glossary.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc


def scenarios(glossary: Glossary, informational: bool = True) -> list[Scenario]:
    """term x cause x context (faults), then term x context (informational), in glossary order."""
    faults = [
        Scenario(id=f"{t.id}.{c.id}.{x.id}", term=t, cause=c, context=x)
        for t in glossary.terms for c in glossary.causes for x in glossary.contexts
    ]
    if not informational:
        return faults
    return faults + [Scenario(id=f"{t.id}.{INFO}.{x.id}", term=t, cause=None, context=x)
                     for t in glossary.terms for x in glossary.contexts]


def system_prompt(path: str | Path | None = None) -> str:
    return Path(path or PROMPTS / "system.txt").read_text().strip()
