"""The eval job: answers -> judgments -> statistics -> report, each stage resumable from its files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from eval.analysis import analyse
from eval.answers import ANSWERS_FILE, collect_answers
from eval.clients import make_chat
from common.journal import read_records
from eval.judge_validity import validity_summary
from eval.judging import JUDGMENTS_FILE, JudgingError, anchor_target, judge_model, run_judges
from eval.panel import load_panel
from eval.questions import load_questions
from eval.report import write_report
from eval.settings import EvalSettings
from eval.targets import resolve_targets

RUN_FILE = "run.json"


class JobError(RuntimeError):
    """The job could not finish; what it stored so far is kept for the next run."""


def run_job(settings: EvalSettings, log: Callable[[str], None] = print,
            panel_defaults: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Answers, judgments, statistics and report in settings.out; `panel_defaults` fill the panel's unset ${VAR}s."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    panel = load_panel(settings.panel, panel_defaults)
    questions = load_questions(settings.questions, settings.limit)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    targets = resolve_targets(settings.endpoint, settings.api, settings.targets, api_key, settings.adapters)
    anchor = anchor_target(panel, targets)
    judges = []
    for judge in panel.judges:
        entry = {"name": judge.name, "kind": judge.kind}
        if judge.kind == "llm":
            entry.update(model=judge_model(judge), url=judge.url, api=judge.api, protocols=list(judge.protocols))
            if judge.validity:
                entry["validity"] = validity_summary(panel.locate(judge.validity))
        else:
            entry.update(method=judge.method, tie_margin=judge.tie_margin)
        judges.append(entry)
    run_info: dict[str, Any] = {
        "endpoint": settings.endpoint, "api": settings.api, "panel": str(settings.panel),
        "question_files": [str(p) for p in settings.questions], "question_ids": [q.id for q in questions],
        "anchor": anchor.name if anchor else None, "bootstrap": panel.bootstrap,
        "decoding": panel.decoding.model_dump(), "judges": judges,
        "targets": [{"name": t.name, "model": t.model, "is_base": t.is_base, "val_loss": t.val_loss,
                     "train_kwh": t.train_kwh, "manifest": t.manifest} for t in targets],
        "time": time.time(),
    }
    if (out / RUN_FILE).is_file():
        check_compatible(json.loads((out / RUN_FILE).read_text()), run_info, out)
    (out / RUN_FILE).write_text(json.dumps(run_info, indent=2) + "\n")
    log(f"{len(targets)} targets ({', '.join(t.name for t in targets)}), {len(questions)} questions, "
        f"{len(panel.judges)} judges")

    chat = make_chat(settings.api, settings.endpoint, api_key, settings.timeout_s)
    answered = collect_answers(chat, targets, questions, panel.decoding, out, concurrency=settings.concurrency,
                               max_retries=settings.max_retries, backoff_s=settings.backoff_s, progress=log)
    log(f"answers: {answered.written} asked, {answered.cached} already on file, {answered.failed} failed")
    if answered.failed:
        raise JobError("some answers could not be obtained (re-run to ask only those):\n  "
                       + "\n  ".join(answered.failures[:10]))
    wanted = {q.id for q in questions}
    answers = [a for a in read_records(out / ANSWERS_FILE)
               if a["question_id"] in wanted and a["target"] in {t.name for t in targets}]
    try:
        judged = run_judges(panel, targets, questions, answers, out, progress=log,
                            models={j["name"]: j.get("model") for j in judges})
    except JudgingError as exc:
        raise JobError(str(exc)) from None
    log(f"judgments: {judged.written} new, {judged.cached} already on file, {judged.failed} failed")
    files = render(out)
    if judged.failed:
        raise JobError(f"{judged.failed} judgments failed on endpoint errors (the report leaves them out; "
                       "re-run to ask only those):\n  " + "\n  ".join(judged.failures))
    return files


def check_compatible(old: dict[str, Any], new: dict[str, Any], out: Path) -> None:
    """Stored answers and judgments are reused by key: refuse a re-run whose answers or verdicts would differ."""
    changed = [k for k in ("endpoint", "api", "decoding") if old.get(k) != new.get(k)]
    old_judges = {j["name"]: j for j in old.get("judges", [])}
    for judge in new["judges"]:
        before = old_judges.get(judge["name"])
        if before and any(before.get(k) != judge.get(k) for k in ("kind", "model", "url", "method")):
            changed.append(f"judge {judge['name']}")
    if changed:
        raise JobError(f"{out} holds a run with other settings ({', '.join(changed)}); its answers and judgments "
                       "would be mixed with new ones: use another --out")


def render(out: Path) -> dict[str, Path]:
    """Statistics and report from the files in `out`; asks nothing."""
    out = Path(out)
    if not (out / RUN_FILE).is_file():
        raise JobError(f"{out} holds no eval run ({RUN_FILE} is missing)")
    run_info = json.loads((out / RUN_FILE).read_text())
    wanted = set(run_info["question_ids"])
    answers = [a for a in read_records(out / ANSWERS_FILE) if a["question_id"] in wanted]
    judgments = [j for j in read_records(out / JUDGMENTS_FILE) if j["question_id"] in wanted]
    result = analyse(run_info, answers, judgments)
    return write_report(result, run_info, out)
