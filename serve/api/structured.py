"""Structured output in each protocol's words: OpenAI's `response_format` (`json_object`, `json_schema`), vLLM's
`structured_outputs` (`json`, `regex`, `json_object`) and TGI's `parameters.grammar` (`json`, `regex`), all turned
into one engine Grammar, compiled for the engine's vocabulary before the request is queued."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from serve.engine.grammar import Grammar
from serve.engine.interface import Engine


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="The JSON schema the reply must match")
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]

    def grammar(self) -> None:
        return None


class JSONObjectFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["json_object"]

    def grammar(self) -> Grammar:
        return Grammar.json_object()


class JSONSchemaResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat

    def grammar(self) -> Grammar:
        if self.json_schema.schema_ is None:
            return Grammar.json_object()
        return Grammar.json_schema(self.json_schema.schema_, "response_format.json_schema.schema")


# OpenAI's `response_format`: plain text (the default), any JSON object, or JSON matching a schema.
ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaResponseFormat, Field(discriminator="type")]


_KINDS = ("json", "regex", "json_object")


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs` (the kit's remote engine sends it to vLLM and to kit servers alike): one of
    `json`, `regex`, `json_object` (the schema says so, as does the refusal)."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra={"not": {"anyOf": [
        {"required": [a, b]} for i, a in enumerate(_KINDS) for b in _KINDS[i + 1:]]}})

    json_: dict[str, Any] | None = Field(None, alias="json")
    regex: str | None = Field(None, min_length=1)
    json_object: bool | None = None

    @model_validator(mode="after")
    def _one(self):
        if len(self.model_fields_set & {"json_", "regex", "json_object"}) > 1:
            raise ValueError("give one of json, regex or json_object")
        return self

    def grammar(self) -> Grammar | None:
        if self.json_ is not None:
            return Grammar.json_schema(self.json_, "structured_outputs.json")
        if self.regex is not None:
            return Grammar.pattern(self.regex, "structured_outputs.regex")
        return Grammar.json_object() if self.json_object else None


class TGIJSONGrammar(BaseModel):
    """TGI's `{"type": "json", "value": schema}`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["json"]
    value: dict[str, Any] = Field(description="The JSON schema the text must match")

    def grammar(self) -> Grammar:
        return Grammar.json_schema(self.value, "parameters.grammar.value")


class TGIRegexGrammar(BaseModel):
    """TGI's `{"type": "regex", "value": pattern}`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["regex"]
    value: str = Field(min_length=1, description="The regular expression the whole text must match")

    def grammar(self) -> Grammar:
        return Grammar.pattern(self.value, "parameters.grammar.value")


TGIGrammar = Annotated[TGIJSONGrammar | TGIRegexGrammar, Field(discriminator="type")]


# For the OpenAI request models: response_format or structured_outputs, not both.
ONE_FORMAT = {"not": {"required": ["response_format", "structured_outputs"]}}


def check_one_format(fields_set: set[str]) -> None:
    if {"response_format", "structured_outputs"} <= fields_set:
        raise ValueError("give one of response_format or structured_outputs, not both")


async def prepare(engine: Engine, grammar: Grammar | None) -> None:
    """The engine's `prepare_grammar` in a worker thread (compiling a new schema takes seconds), so that neither
    the event loop nor the engine's loop waits; an invalid or unenforceable grammar is refused here."""
    if grammar is not None:
        await run_in_threadpool(engine.prepare_grammar, grammar)
