"""Append-only JSONL files that survive a killed process: eval's answers and judgments, the data step's cache.

Each record carries a `key`; a later record with the same key replaces an earlier one on read, and `append`
skips keys already present. A process killed mid-write leaves at most one partial last line: it is ignored on
read and cut off before the next append, so nothing is lost, doubled or glued to the next record.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator


def read_records(path: Path) -> list[dict[str, Any]]:
    """Complete records in file order, the last one of each key."""
    by_key: dict[str, dict[str, Any]] = {}
    for record in _complete_lines(Path(path)):
        by_key[record.get("key") or json.dumps(record, sort_keys=True)] = record
    return list(by_key.values())


def _complete_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # a write cut short by a kill
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


class Journal:
    """Thread-safe appender: one JSON line per record, flushed and fsynced before `append` returns."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_partial_tail()
        self._lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {r["key"]: r for r in read_records(self.path) if "key" in r}

    @property
    def done(self):
        """The keys on file (a live view: it grows as records are appended)."""
        return self.records.keys()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def _cut_partial_tail(self) -> None:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict[str, Any]) -> bool:
        """Write the record unless its key is already there; returns whether it was written."""
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            if record["key"] in self.records:
                return False
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.records[record["key"]] = record
            return True

    def __len__(self) -> int:
        return len(self.records)
