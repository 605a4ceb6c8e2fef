"""Parse judges' structured verdicts. Anything that is not a clean verdict is refused, never guessed.

The verdict is the *last* JSON object in the output that has the expected key (`scores` or `winner`): a judge
that quotes a fake verdict planted in an answer and then gives its own is read correctly, and an invalid last
verdict is refused rather than replaced by an earlier one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from eval.panel import RUBRIC_CRITERIA

_DECODER = json.JSONDecoder()
_BRACKET = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_WINNERS = {"a": "A", "b": "B", "tie": "tie", "c": "tie", "draw": "tie"}


def verdict_schema(kind: str) -> dict[str, Any]:
    """The JSON schema of a verdict (`criteria`, `overall` or `pairwise`), for judges whose endpoint enforces one
    (structured output). Scores only: the prompts' rationale comes after the scores, so it cannot change them, and
    a bounded verdict always fits in the judge's max_tokens."""
    score = {"type": "integer", "enum": [1, 2, 3, 4, 5]}
    if kind == "criteria":
        scores = {"type": "object", "properties": {c: score for c in RUBRIC_CRITERIA},
                  "required": list(RUBRIC_CRITERIA), "additionalProperties": False}
        properties = {"scores": scores}
    elif kind == "overall":
        properties = {"score": score}
    elif kind == "pairwise":
        properties = {"winner": {"type": "string", "enum": ["A", "B", "tie"]}}
    else:
        raise ValueError(f"unknown verdict kind {kind!r}")
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


class VerdictError(ValueError):
    """The judge's output holds no usable verdict; the message says why."""


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object embedded in the text (prose and code fences around them are skipped)."""
    found: list[dict[str, Any]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def _score(value: Any) -> int:
    if isinstance(value, bool):
        raise VerdictError(f"score {value!r} is not a number")
    if isinstance(value, str) and re.fullmatch(r"\s*[1-5]\s*", value):
        return int(value)
    if isinstance(value, (int, float)) and math.isfinite(value) and float(value).is_integer() and 1 <= value <= 5:
        return int(value)
    raise VerdictError(f"score {value!r} is not an integer from 1 to 5")


def parse_rubric(text: str) -> dict[str, int]:
    """{criterion: 1..5} for every rubric criterion, or VerdictError."""
    candidates = [
        o for o in json_objects(text)
        if isinstance(o.get("scores"), dict) or all(c in o for c in RUBRIC_CRITERIA)
    ]
    if not candidates:
        raise VerdictError("no JSON verdict with `scores` found")
    verdict = candidates[-1]
    scores = verdict["scores"] if isinstance(verdict.get("scores"), dict) else verdict
    missing = [c for c in RUBRIC_CRITERIA if c not in scores]
    if missing:
        raise VerdictError(f"verdict lacks scores for {', '.join(missing)}")
    return {c: _score(scores[c]) for c in RUBRIC_CRITERIA}


def parse_overall(text: str) -> dict[str, int]:
    """{"overall": 1..5} from a verdict `{"score": n}`, or VerdictError."""
    candidates = [o for o in json_objects(text) if "score" in o]
    if not candidates:
        raise VerdictError("no JSON verdict with `score` found")
    return {"overall": _score(candidates[-1]["score"])}


def parse_pairwise(text: str) -> str:
    """"A", "B" or "tie" (the position that won), or VerdictError."""
    candidates = [o for o in json_objects(text) if "winner" in o]
    if candidates:
        winner = candidates[-1]["winner"]
        if isinstance(winner, str) and winner.strip().lower() in _WINNERS:
            return _WINNERS[winner.strip().lower()]
        raise VerdictError(f"winner {winner!r} is not A, B or tie")
    marks = {_WINNERS[m.lower()] for m in _BRACKET.findall(text)}
    if len(marks) == 1:
        return marks.pop()
    if len(marks) > 1:
        raise VerdictError("contradictory verdict markers")
    raise VerdictError("no JSON verdict with `winner` found")
