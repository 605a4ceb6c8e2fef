"""Datasets of conversation records (common.records): scenario-disjoint splits, fingerprint and statistics."""

from __future__ import annotations

import hashlib
import json
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Iterable

from pydantic import ValidationError

from common.records import CONVERSATIONS_FILE, Conversation, Split

STATS_FILE = "stats.json"


def assign_splits(scenario_ids: Iterable[str], seed: int = 0, val: float = 0.1, test: float = 0.1) -> dict[str, Split]:
    """Split scenario ids (never rows) into train/val/test by a seeded shuffle; the same ids give the same split."""
    ids = sorted(set(scenario_ids))
    random.Random(seed).shuffle(ids)
    n_val, n_test = round(len(ids) * val), round(len(ids) * test)
    out: dict[str, Split] = {}
    for i, sid in enumerate(ids):
        out[sid] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def conversations_path(path: str | Path) -> Path:
    """A dataset is given as its directory or its conversations.jsonl file."""
    path = Path(path)
    return path / CONVERSATIONS_FILE if path.is_dir() else path


def read_conversations(path: str | Path) -> list[Conversation]:
    path = conversations_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}; create one with `supportkit data generate --offline --out DIR`")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(Conversation.model_validate_json(line))
        except ValidationError as exc:
            raise ValueError(f"{path}:{n} is not a valid conversation record: {exc.errors()[0]['msg']}") from exc
    return rows


def write_conversations(out_dir: str | Path, rows: list[Conversation], meta: dict) -> Path:
    """conversations.jsonl plus stats.json (counts, lengths, the system prompt and generator settings)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CONVERSATIONS_FILE
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(r.model_dump_json(exclude_none=True) + "\n" for r in rows))
    tmp.replace(path)
    stats = {**meta, **dataset_stats(rows), "fingerprint": fingerprint(rows)}
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return path


def fingerprint(rows: list[Conversation]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(r.model_dump_json(exclude_none=True).encode())
    return "sha256:" + h.hexdigest()[:32]


def check_disjoint(rows: list[Conversation]) -> None:
    """Raise if one scenario appears in more than one split."""
    seen: dict[str, str] = {}
    for r in rows:
        prev = seen.setdefault(r.scenario.id, r.split)
        if prev != r.split:
            raise ValueError(f"scenario {r.scenario.id} is in both {prev} and {r.split}")


def dataset_stats(rows: list[Conversation]) -> dict:
    def words(role: str) -> list[int]:
        return [len(m.content.split()) for r in rows for m in r.messages if m.role == role]

    def summary(xs: list[int]) -> dict:
        return {"mean": round(statistics.fmean(xs), 1), "min": min(xs), "max": max(xs)} if xs else {}

    by_split = Counter(r.split for r in rows)
    return {
        "conversations": len(rows),
        "scenarios": len({r.scenario.id for r in rows}),
        "by_split": {s: by_split.get(s, 0) for s in ("train", "val", "test")},
        "scenarios_by_split": {
            s: len({r.scenario.id for r in rows if r.split == s}) for s in ("train", "val", "test")
        },
        "turns": dict(sorted(Counter(sum(m.role == "assistant" for m in r.messages) for r in rows).items())),
        "user_words": summary(words("user")),
        "assistant_words": summary(words("assistant")),
        "by_term": len({r.scenario.term for r in rows}),
        "by_cause": len({r.scenario.cause for r in rows}),
        "by_context": len({r.scenario.context for r in rows}),
    }
