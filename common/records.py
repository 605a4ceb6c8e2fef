"""The records that cross steps: the conversation record and the question-file record (JSONL, one per line).

The data step writes conversations; training reads them; eval reads question files, and a conversation record
is one (the prompt is every turn before the last assistant turn, and that turn is the reference); the demo's
feedback export writes question records. One model each, so that the three agree on what a valid line is.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Split = Literal["train", "val", "test"]
CONVERSATIONS_FILE = "conversations.jsonl"  # a dataset directory's records; eval takes the directory as a question file


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class ScenarioRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    term: str
    cause: str
    context: str

    @property
    def id(self) -> str:
        return f"{self.term}.{self.cause}.{self.context}"


class Conversation(BaseModel):
    """`{"id", "messages", "scenario": {"term", "cause", "context"}, "split"}`; splits are disjoint by scenario."""

    model_config = ConfigDict(extra="allow")
    id: str
    messages: list[Message] = Field(min_length=2)
    scenario: ScenarioRef
    split: Split


class QuestionRecord(BaseModel):
    """`{"id", "question" | "messages", "reference"?, "scenario"?, "split"?}`; other keys are kept (e.g. `feedback`).

    Validation errors are `ValueError`s whose message says what to fix (see `parse_question`).
    """

    model_config = ConfigDict(extra="allow")
    id: str
    question: str | None = None
    messages: list[Message] | None = None
    reference: str | None = None
    scenario: dict[str, Any] | None = None
    split: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _something_to_ask(self) -> "QuestionRecord":
        if self.messages is None and self.question is None:
            raise ValueError("each record needs `question` (a string) or `messages`")
        if not any(m.role == "user" for m in self.prompt()):
            raise ValueError("no user turn to ask")
        return self

    def prompt(self) -> list[Message]:
        """What is asked: the messages up to (not including) a final assistant turn, else the question."""
        if self.messages is None:
            return [Message.model_construct(role="user", content=self.question or "")]
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[:-1]
        return list(self.messages)

    def reference_answer(self) -> str | None:
        """The given reference, else the final assistant turn of a conversation."""
        if not self.reference and self.messages and self.messages[-1].role == "assistant":
            return self.messages[-1].content
        return self.reference


_FIELD_ERRORS = {
    "id": "each record needs an `id`",
    "messages": "`messages` must be a list of {role, content} strings (role system, user or assistant)",
    "question": "`question` must be a string",
    "reference": "`reference` must be a string",
    "scenario": "`scenario` must be an object",
    "split": "`split` must be a string",
}


def parse_question(record: Any) -> QuestionRecord:
    """A question record, or ValueError with one plain sentence (the first problem found)."""
    if not isinstance(record, dict):
        raise ValueError("each record must be a JSON object with an `id`")
    try:
        return QuestionRecord.model_validate(record)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in _FIELD_ERRORS:
            raise ValueError(_FIELD_ERRORS[field]) from None
        raise ValueError(str(error["msg"]).removeprefix("Value error, ")) from None
