"""Question files: JSONL with `id`, `question` (or `messages`) and an optional `reference`.

The data step's conversation records (`{"id", "messages", "scenario", "split"}`) are valid question files:
the prompt is every turn before the last assistant turn, and that turn is the reference. Records of another
split than `test` are skipped, so the whole conversations file (or its dataset directory) can be given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.records import CONVERSATIONS_FILE, parse_question

DEMO_QUESTIONS = Path(__file__).parent / "configs" / "questions-demo.jsonl"


class QuestionFileError(ValueError):
    """A question file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Question:
    id: str
    messages: list[dict[str, str]]
    reference: str | None = None
    scenario: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The last user turn: what a judge is shown as the customer's question."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


def parse_record(record: Any, where: str) -> Question | None:
    """The question of one record, or None for a record of another split than `test`."""
    if isinstance(record, dict) and "id" in record and record.get("split") not in (None, "test"):
        return None  # a training or validation record of a dataset: never asked, so not checked
    try:
        parsed = parse_question(record)
    except ValueError as exc:
        raise QuestionFileError(f"{where}: {exc}") from None
    return Question(parsed.id, [m.model_dump() for m in parsed.prompt()], parsed.reference_answer(),
                    dict(parsed.scenario or {}))


def load_questions(paths: list[Path], limit: int | None = None) -> list[Question]:
    """All questions of the files in order; ids must be unique across files."""
    questions: list[Question] = []
    seen: set[str] = set()
    for path in paths:
        path = Path(path)
        if path.is_dir():  # a dataset directory of the data step
            path = path / CONVERSATIONS_FILE
        if not path.is_file():
            raise QuestionFileError(f"question file not found: {path}")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise QuestionFileError(f"{where}: not JSON ({exc})") from None
            question = parse_record(record, where)
            if question is None:
                continue
            if question.id in seen:
                raise QuestionFileError(f"{where}: duplicate question id {question.id!r}")
            seen.add(question.id)
            questions.append(question)
    if not questions:
        raise QuestionFileError(f"no questions in {', '.join(map(str, paths))}")
    return questions[:limit] if limit else questions
