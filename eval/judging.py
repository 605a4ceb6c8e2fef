"""Stage 2: the panel judges the stored answers; judgments.jsonl grows as verdicts arrive.

Keys (judge, protocol, target or ordered pair, question) make a killed run resume where it stopped. Each LLM
judge has its own pool of `concurrency` workers; judges run side by side. A judgment whose endpoint stayed
down is not written, so the next run asks it again; a malformed verdict is written as missing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from common.http import EndpointError
from common.journal import Journal
from eval.llm_judge import LLMJudge
from eval.panel import JudgeConfig, PanelConfig
from eval.questions import Question
from eval.reference_judge import ReferenceJudge
from eval.run_counts import RunCounts
from eval.targets import Target, discover

JUDGMENTS_FILE = "judgments.jsonl"


class JudgingError(ValueError):
    """The panel cannot judge these targets as configured."""


def anchor_target(panel: PanelConfig, targets: list[Target]) -> Target | None:
    for target in targets:
        if (panel.anchor == "base" and target.is_base) or target.name == panel.anchor:
            return target
    return None


def judge_model(config: JudgeConfig) -> str | None:
    """The configured model, else the judge endpoint's base model (TGI needs none)."""
    if config.model or config.api == "tgi":
        return config.model or None
    try:
        base, _ = discover(config.url, config.api_key(), timeout=config.timeout_s)
    except EndpointError as exc:
        raise JudgingError(f"judge {config.name!r}: no model given and {exc}") from None
    if not base:
        raise JudgingError(f"judge {config.name!r}: no model given and {config.url} lists no base model")
    return base


def _llm_tasks(judge: LLMJudge, targets, anchor, questions, answers, done) -> list[tuple[dict, Callable]]:
    """(record stub, call) for every judgment of this judge that is not on file yet."""
    name = judge.config.name
    tasks = []
    for q in questions:
        if "rubric" in judge.config.protocols:
            for t in targets:
                a = answers.get((t.name, q.id))
                key = f"{name}|rubric|{t.name}|{q.id}"
                if a is not None and key not in done:
                    stub = {"key": key, "judge": name, "kind": "rubric", "target": t.name, "question_id": q.id}
                    tasks.append((stub, lambda q=q, a=a: judge.rubric(q.text, q.reference, a["answer"])))
        if "pairwise" in judge.config.protocols and anchor is not None:
            for t in targets:
                if t.name == anchor.name:
                    continue
                for first, second in ((t.name, anchor.name), (anchor.name, t.name)):
                    a, b = answers.get((first, q.id)), answers.get((second, q.id))
                    key = f"{name}|pairwise|{first}|{second}|{q.id}"
                    if a is None or b is None or key in done:
                        continue
                    stub = {"key": key, "judge": name, "kind": "pairwise", "question_id": q.id,
                            "first": first, "second": second}
                    tasks.append((stub, lambda q=q, a=a, b=b: judge.pairwise(q.text, q.reference, a["answer"], b["answer"])))
    return tasks


def _finish(stub: dict, result: dict[str, Any], model: str | None) -> dict[str, Any]:
    record = {**stub, **result, "model": model, "time": time.time()}
    verdict = record.pop("verdict")
    if stub["kind"] == "rubric":
        record["scores"] = verdict
    else:
        record["winner_position"] = verdict
        record["winner"] = {"A": stub["first"], "B": stub["second"], "tie": "tie"}.get(verdict)
    return record


def run_reference(config: JudgeConfig, journal: Journal, targets, questions, answers) -> int:
    todo = []
    for q in questions:
        for t in targets:
            a = answers.get((t.name, q.id))
            key = f"{config.name}|reference|{t.name}|{q.id}"
            if q.reference and a is not None and key not in journal.done:
                todo.append((key, t, q, a))
    if not todo:
        return 0
    judge = ReferenceJudge(config.method)
    scores = judge.score([(a["answer"], q.reference) for _, _, q, a in todo])
    for (key, t, q, _), score in zip(todo, scores):
        journal.append({"key": key, "judge": config.name, "kind": "reference", "target": t.name,
                        "question_id": q.id, "status": "ok", "score": score, "method": judge.name, "time": time.time()})
    return len(todo)


def run_judges(panel: PanelConfig, targets: list[Target], questions: list[Question], answer_records: list[dict],
               out: Path, progress: Callable[[str], None] = lambda _: None,
               models: dict[str, str | None] | None = None) -> RunCounts:
    """`models`: each LLM judge's model when already resolved (else asked from its endpoint)."""
    journal = Journal(out / JUDGMENTS_FILE)
    run = RunCounts(cached=len(journal.done))
    answers = {(r["target"], r["question_id"]): r for r in answer_records}
    anchor = anchor_target(panel, targets)
    llm_configs = [j for j in panel.judges if j.kind == "llm"]
    if anchor is None and any("pairwise" in j.protocols for j in llm_configs):
        raise JudgingError(f"the anchor {panel.anchor!r} is not among the targets "
                           f"({', '.join(t.name for t in targets)}); add it to --targets")
    for config in panel.judges:
        if config.kind == "reference":
            run.written += run_reference(config, journal, targets, questions, answers)
    pools, futures = [], {}
    try:
        for config in llm_configs:
            model = models[config.name] if models and config.name in models else judge_model(config)
            judge = LLMJudge(config, panel, model)
            pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix=f"judge-{config.name}")
            pools.append(pool)
            for stub, call in _llm_tasks(judge, targets, anchor, questions, answers, journal.done):
                futures[pool.submit(call)] = (stub, judge.model)
        for n, future in enumerate(as_completed(futures), 1):
            stub, model = futures[future]
            try:
                journal.append(_finish(stub, future.result(), model))
                run.written += 1
            except EndpointError as exc:
                run.failed += 1
                if len(run.failures) < 10:
                    run.failures.append(f"{stub['key']}: {exc}")
            if n % 20 == 0:
                progress(f"judgments: {n}/{len(futures)} done, {run.failed} failed")
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    return run
