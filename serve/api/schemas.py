"""What the response bodies of both APIs share: the base that leaves room for added fields, energy, hand-off."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
