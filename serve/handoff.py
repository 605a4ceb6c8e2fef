"""Hand-off to a human: does this turn hand the customer over (asked for by them, or offered by the reply)?

The phrases are data (`serve/configs/handoff.yaml`, per language), so an operator adds a language or a phrase
without touching code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

SHIPPED_RULES = Path(__file__).resolve().parent / "configs" / "handoff.yaml"


class HandoffConfig(BaseModel):
    customer: dict[str, list[str]]
    reply: dict[str, list[str]]
    user_turns: list[tuple[str, str]] = []


@dataclass(frozen=True)
class Handoff:
    flagged: bool = False
    reason: str | None = None  # "customer_request" | "reply_escalation"
    phrase: str | None = None
    language: str | None = None

    def json(self) -> dict:
        return {"flagged": self.flagged, "reason": self.reason, "phrase": self.phrase, "language": self.language}


NO_HANDOFF = Handoff()


def _compile(phrases: dict[str, list[str]]) -> list[tuple[str, str, re.Pattern]]:
    out = []
    for language, items in phrases.items():
        for phrase in items:
            words = r"\s+".join(re.escape(w) for w in phrase.split())
            out.append((language, phrase, re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)))
    return out


class HandoffRules:
    def __init__(self, config: HandoffConfig):
        self.customer = _compile(config.customer)
        self.reply = _compile(config.reply)
        self.user_turns = config.user_turns

    @classmethod
    def load(cls, path: Path | None = None) -> "HandoffRules":
        path = Path(path or SHIPPED_RULES)
        try:
            return cls(HandoffConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"hand-off rules {path} are unreadable: {exc}") from exc

    @staticmethod
    def _find(rules, text: str):
        for language, phrase, pattern in rules:
            if text and pattern.search(text):
                return language, phrase
        return None

    def check(self, customer_text: str, reply_text: str) -> Handoff:
        """`customer_text`: the customer's last turn; `reply_text`: the generated reply."""
        if hit := self._find(self.customer, customer_text):
            return Handoff(True, "customer_request", hit[1], hit[0])
        if hit := self._find(self.reply, reply_text):
            return Handoff(True, "reply_escalation", hit[1], hit[0])
        return NO_HANDOFF

    def last_user_turn(self, prompt: str) -> str:
        """The last user turn of a rendered prompt (the whole prompt when no known turn markers are in it)."""
        for start, end in self.user_turns:
            at = prompt.rfind(start)
            if at >= 0:
                body = prompt[at + len(start):]
                stop = body.find(end)
                return body if stop < 0 else body[:stop]
        return prompt
