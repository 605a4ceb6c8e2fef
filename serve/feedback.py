"""Feedback on demo replies: thumbs up/down and a comment, stored with the (redacted) conversation in SQLite.

Every write goes straight to the database file (WAL journal, a busy timeout), so several replicas may share one
file on a volume and nothing is lost when a process restarts. One row per rated reply: rating again replaces the
rating; a comment is added to the row.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from common.models import cache_dir
from common.records import QuestionRecord
from common.redact import Redactor

log = logging.getLogger("supportkit.feedback")

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    turn INTEGER NOT NULL,          -- index of the rated assistant message in `messages`
    side TEXT NOT NULL DEFAULT '',  -- compare mode: 'A' or 'B'
    model TEXT NOT NULL,            -- adapter name, or the base model's name
    rating INTEGER NOT NULL,        -- +1 thumbs up, -1 thumbs down
    comment TEXT,
    messages TEXT NOT NULL,         -- JSON list of {role, content}, redacted, up to and including the reply
    handoff INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (conversation_id, side, turn)
);
"""


def default_path() -> Path:
    return cache_dir() / "feedback.db"


@dataclass
class FeedbackRecord:
    id: str
    conversation_id: str
    turn: int
    side: str
    model: str
    rating: int
    comment: str | None
    messages: list[dict]
    handoff: bool
    created_at: float
    updated_at: float


class FeedbackStore:
    def __init__(self, path: Path | None = None, redactor: Redactor | None = None):
        self.path = Path(path or default_path())
        self.redactor = redactor or Redactor()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: safe from any thread, and no state held between requests.
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def rate(self, conversation_id: str, turn: int, model: str, rating: int, messages: list[dict],
             side: str = "", handoff: bool = False, comment: str | None = None) -> str:
        """Store (or replace) the rating of reply `turn`; returns the row's id. PII is redacted first."""
        if rating not in (1, -1):
            raise ValueError("rating must be +1 or -1")
        if not 0 <= turn < len(messages) or messages[turn].get("role") != "assistant":
            raise ValueError(f"message {turn} is not an assistant reply")
        clean = json.dumps(self.redactor.messages(messages[: turn + 1]), ensure_ascii=False)
        note = self.redactor.redact(comment) if comment else None
        now = time.time()
        with closing(self._connect()) as db, db:
            row = db.execute(
                "INSERT INTO feedback (id, conversation_id, turn, side, model, rating, comment, messages, handoff,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (conversation_id, side, turn) DO UPDATE SET rating=excluded.rating,"
                " model=excluded.model, messages=excluded.messages, handoff=excluded.handoff,"
                " comment=COALESCE(excluded.comment, feedback.comment), updated_at=excluded.updated_at"
                " RETURNING id",
                (uuid.uuid4().hex, conversation_id, turn, side, model, rating, note, clean, int(handoff), now, now),
            ).fetchone()
        return row[0]

    def clear(self, conversation_id: str, turn: int, side: str = "") -> bool:
        """Remove the rating of a reply (the agent took their thumb back); False when it had none."""
        with closing(self._connect()) as db, db:
            cur = db.execute("DELETE FROM feedback WHERE conversation_id=? AND side=? AND turn=?",
                             (conversation_id, side, turn))
        return cur.rowcount == 1

    def comment(self, feedback_id: str, comment: str) -> bool:
        """Attach a (redacted) comment to a rated reply; False when there is no such row."""
        with closing(self._connect()) as db, db:
            cur = db.execute("UPDATE feedback SET comment=?, updated_at=? WHERE id=?",
                             (self.redactor.redact(comment.strip()) or None, time.time(), feedback_id))
        return cur.rowcount == 1

    def records(self, rating: int | None = None) -> Iterator[FeedbackRecord]:
        query = "SELECT id, conversation_id, turn, side, model, rating, comment, messages, handoff, created_at, updated_at FROM feedback"
        args: tuple = ()
        if rating is not None:
            query, args = query + " WHERE rating=?", (rating,)
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY created_at, id", args).fetchall()
        for r in rows:
            yield FeedbackRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), bool(r[8]), r[9], r[10])


def open_store(path: Path | None, redactor: Redactor | None = None) -> FeedbackStore | None:
    """The store, or None (with a warning) when its file cannot be opened: serving goes on without feedback."""
    try:
        return FeedbackStore(path, redactor)
    except (OSError, sqlite3.Error) as exc:
        log.warning("feedback is not stored: cannot open %s (%s); set SUPPORTKIT_SERVE_FEEDBACK_DB to a writable file",
                    path or default_path(), exc)
        return None


def question_record(rec: FeedbackRecord) -> QuestionRecord:
    """An eval question-file record: the conversation up to the customer's turn; a liked reply becomes the reference."""
    reply = rec.messages[rec.turn]["content"]
    return QuestionRecord(
        id=f"feedback-{rec.id}", messages=rec.messages[: rec.turn], reference=reply if rec.rating > 0 else None,
        feedback={"model": rec.model, "rating": rec.rating, "comment": rec.comment, "handoff": rec.handoff,
                  "reply": reply, "conversation_id": rec.conversation_id},
    )


def export_jsonl(store: FeedbackStore, out: Path, rating: int | None = None) -> int:
    """Write the feedback as JSONL question records; returns how many were written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in store.records(rating):
            record = question_record(rec).model_dump(mode="json", exclude_none=True)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out)
    return n
