"""Turn generated conversations into a dataset: de-duplicate, split by scenario, write records and stats."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Iterable

from common.records import Conversation
from train.data.glossary import Scenario
from train.data.records import assign_splits, check_disjoint, write_conversations


def pick_scenarios(all_scenarios: list[Scenario], limit: int | None, seed: int = 0) -> list[Scenario]:
    """All scenarios, or a seeded sample of `limit` of them (kept in grid order)."""
    if not limit or limit >= len(all_scenarios):
        return all_scenarios
    chosen = set(random.Random(f"pick:{seed}").sample(range(len(all_scenarios)), limit))
    return [s for i, s in enumerate(all_scenarios) if i in chosen]


def content_key(messages: list[dict[str, str]]) -> str:
    """Duplicates are the same exchange up to case, punctuation and spacing (the system prompt is ignored)."""
    text = "\n".join(f"{m['role']}:{m['content']}" for m in messages if m["role"] != "system")
    return hashlib.sha256(re.sub(r"[\W_]+", " ", text.lower()).strip().encode()).hexdigest()


def build_dataset(
    generated: Iterable[tuple[Scenario, int, list[dict[str, str]]]], out_dir: str | Path, meta: dict,
    split_seed: int = 0, val: float = 0.1, test: float = 0.1,
) -> tuple[Path, dict]:
    items = list(generated)
    splits = assign_splits((sc.id for sc, _, _ in items), seed=split_seed, val=val, test=test)
    rows, seen, dupes = [], set(), 0
    for sc, k, messages in items:
        key = content_key(messages)
        if key in seen:
            dupes += 1
            continue
        seen.add(key)
        rows.append(Conversation(id=f"{sc.id}.{k}", messages=messages, scenario=sc.ref(), split=splits[sc.id]))
    check_disjoint(rows)
    meta = {**meta, "duplicates_dropped": dupes, "split_seed": split_seed, "split_ratios": {"val": val, "test": test}}
    path = write_conversations(out_dir, rows, meta)
    import json

    return path, json.loads((Path(out_dir) / "stats.json").read_text())
