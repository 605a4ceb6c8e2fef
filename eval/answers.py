"""Stage 1: ask every target every question with fixed decoding; answers.jsonl grows as answers arrive."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from common.http import EndpointError, with_retries
from common.journal import Journal
from eval.panel import Decoding
from eval.questions import Question
from eval.run_counts import RunCounts
from eval.targets import Target

ANSWERS_FILE = "answers.jsonl"


def answer_key(target: str, question_id: str) -> str:
    return f"{target}|{question_id}"


def collect_answers(chat, targets: list[Target], questions: list[Question], decoding: Decoding, out: Path,
                    *, concurrency: int = 4, max_retries: int = 4, backoff_s: float = 0.5,
                    progress: Callable[[str], None] = lambda _: None) -> RunCounts:
    """Ask what answers.jsonl lacks. An unknown target or an endpoint that stays down is a failure, not a crash."""
    journal = Journal(out / ANSWERS_FILE)
    run = RunCounts()
    todo = []
    for target in targets:
        for question in questions:
            if answer_key(target.name, question.id) in journal.done:
                run.cached += 1
            else:
                todo.append((target, question))

    def ask(target: Target, question: Question) -> dict[str, Any]:
        reply = with_retries(
            lambda: chat.complete(target.model, question.messages, max_tokens=decoding.max_tokens,
                                  temperature=decoding.temperature, seed=decoding.seed),
            max_retries=max_retries, backoff_s=backoff_s,
        )
        return {"key": answer_key(target.name, question.id), "target": target.name, "question_id": question.id,
                "answer": reply.text, **reply.as_record(), "api": chat.api, "model": target.model,
                "decoding": decoding.model_dump(), "time": time.time()}

    refused: set[str] = set()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(ask, t, q): (t, q) for t, q in todo}
        for future in as_completed(futures):
            target, question = futures[future]
            try:
                journal.append(future.result())
                run.written += 1
            except EndpointError as exc:
                run.failed += 1
                if not exc.retryable and target.name in refused:
                    continue  # one message per refused target is enough
                if not exc.retryable:
                    refused.add(target.name)
                run.failures.append(f"{target.name} / {question.id}: {exc}")
            if (run.written + run.failed) % 20 == 0:
                progress(f"answers: {run.written} asked, {run.cached} cached, {len(run.failures)} failed")
    return run
