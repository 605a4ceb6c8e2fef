"""What the response bodies of both APIs share: the base that leaves room for added fields, energy, hand-off."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


def _integral(cls, v):
    return int(v) if isinstance(v, float) and v.is_integer() else v


def integral(*fields: str):
    """A validator for a strict request model's integer fields: JSON has one number type, so 3.0 is the integer 3
    (as JSON Schema says); 3.5, true and "3" stay refused."""
    return field_validator(*fields, mode="before")(classmethod(_integral))


class Body(BaseModel):
    """A response body. Extra fields are allowed (and documented as allowed), so that a field the kit adds (e.g.
    `sources`) keeps the schema true; `json_body` sends the fields that were set, as each protocol expects."""

    model_config = ConfigDict(extra="allow")

    def json_body(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True)


class Energy(BaseModel):
    joules: float | None
    source: str


class Source(BaseModel):
    """A knowledge-base entry the reply was grounded on (adapters trained grounded only)."""

    id: str
    title: str


class Handoff(BaseModel):
    """Whether this turn hands the customer to a person, and why."""

    flagged: bool
    reason: str | None = None
    phrase: str | None = None
    language: str | None = None
