"""`supportkit eval validate-judge`: ask an LLM judge about planted answers of known quality, then measure it.

The judge is asked exactly as the panel asks it (eval.llm_judge.LLMJudge with the panel's prompts, verdict
format and re-asks): rubric verdicts on every planted level of each question, and pairwise verdicts on pairs
of neighbouring levels in both orders for a subset. Verdicts go to a journal (a killed run resumes), then
eval.validity_stats computes the figures, written as judge_validity.json and judge_validity.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from common.http import EndpointError
from common.journal import Journal, read_records
from eval.llm_judge import LLMJudge
from eval.panel import CONFIGS, JudgeConfig, PanelConfig
from eval.validity_stats import LEVELS, PAIRWISE_PAIRS, Goals, assess, malformed, pairwise_figures, rank_recovery

PLANTED = CONFIGS / "judge-validity" / "planted.jsonl"
VERDICTS_FILE = "validity_verdicts.jsonl"


@dataclass(frozen=True)
class Planted:
    id: str
    question: str
    reference: str
    answers: dict[str, str]  # level -> answer text


class ValidityError(ValueError):
    """The harness cannot run as asked; the message says what to change."""


def load_planted(path: Path = PLANTED) -> list[Planted]:
    items = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        data = json.loads(line)
        missing = [lv for lv in LEVELS if lv not in data.get("answers", {})]
        if missing:
            raise ValidityError(f"{path}:{n}: planted answers lack {', '.join(missing)}")
        items.append(Planted(data["id"], data["question"], data["reference"], data["answers"]))
    return items


def _tasks(judge: LLMJudge, planted: list[Planted], pairwise_questions: int, done) -> list[tuple[dict, Callable]]:
    name, tasks = judge.config.name, []
    for i, p in enumerate(planted):
        if "rubric" in judge.config.protocols:
            for lv in LEVELS:
                key = f"{name}|rubric|{lv}|{p.id}"
                if key not in done:
                    tasks.append(({"key": key, "kind": "rubric", "question_id": p.id, "level": lv},
                                  lambda p=p, lv=lv: judge.rubric(p.question, p.reference, p.answers[lv])))
        if "pairwise" in judge.config.protocols and i < pairwise_questions:
            for better, worse in PAIRWISE_PAIRS:
                for first, second in ((better, worse), (worse, better)):
                    key = f"{name}|pairwise|{first}|{second}|{p.id}"
                    if key not in done:
                        tasks.append(({"key": key, "kind": "pairwise", "question_id": p.id, "first": first,
                                       "second": second},
                                      lambda p=p, a=first, b=second: judge.pairwise(
                                          p.question, p.reference, p.answers[a], p.answers[b])))
    return tasks


def ask(judge: LLMJudge, planted: list[Planted], out: Path, pairwise_questions: int,
        progress: Callable[[str], None] = lambda _: None) -> None:
    """Every verdict not yet in out/validity_verdicts.jsonl, `concurrency` in flight."""
    journal = Journal(out / VERDICTS_FILE)
    tasks = _tasks(judge, planted, pairwise_questions, journal.done)
    failures = []
    with ThreadPoolExecutor(max_workers=judge.config.concurrency, thread_name_prefix="validity") as pool:
        futures = {pool.submit(call): stub for stub, call in tasks}
        for n, future in enumerate(as_completed(futures), 1):
            stub = futures[future]
            try:
                result = future.result()
            except EndpointError as exc:  # not written: the next run asks it again
                failures.append(f"{stub['key']}: {exc}")
                continue
            verdict = result.pop("verdict")
            record = {**stub, **result, "time": time.time()}
            if stub["kind"] == "rubric":
                record["scores"] = verdict
            else:
                record["winner_position"] = verdict
                record["winner"] = {"A": stub["first"], "B": stub["second"], "tie": "tie"}.get(verdict)
            journal.append(record)
            if n % 10 == 0 or n == len(futures):
                progress(f"verdicts: {n}/{len(futures)}")
    if failures:
        raise ValidityError(f"{len(failures)} verdicts failed at the endpoint (re-run to ask them again); "
                            f"first: {failures[0]}")


def validity_summary(path: Path) -> dict[str, Any]:
    """The figures of a judge_validity.json that the ranking report shows next to the judge."""
    path = Path(path)
    if not path.is_file():
        return {"file": str(path), "error": "not found: run `supportkit eval validate-judge` for this judge"}
    data = json.loads(path.read_text())
    rank, pair = data["rank_recovery"], data.get("pairwise") or {}
    return {"file": str(path), "passed": data["assessment"]["passed"], "model": data["judge"].get("model"),
            "questions": rank.get("questions", 0), "kendall_tau": rank.get("kendall_tau"),
            "kendall_tau_ci": rank.get("kendall_tau_ci"), "position_consistency": pair.get("position_consistency"),
            "malformed_rate": data["malformed"]["malformed_rate"], "date": data["run"].get("date")}


def _rubric_value(record: dict) -> float | None:
    if record.get("status") != "ok" or not record.get("scores"):
        return None
    values = list(record["scores"].values())
    return sum(values) / len(values)


def figures(records: list[dict], goals: Goals = Goals(), n_boot: int = 1000) -> dict[str, Any]:
    rubric = [r for r in records if r["kind"] == "rubric"]
    pairwise = [r for r in records if r["kind"] == "pairwise"]
    scores: dict[str, dict[str, float | None]] = {}
    for r in rubric:
        scores.setdefault(r["question_id"], {})[r["level"]] = _rubric_value(r)
    rank = rank_recovery(scores, n_boot) if rubric else {"kendall_tau": None, "kendall_tau_ci": None, "questions": 0}
    pair = pairwise_figures([r for r in pairwise if r.get("status") == "ok"], n_boot) if pairwise else None
    parse = malformed(records)
    parse["by_protocol"] = {k: malformed(v)["malformed_rate"] for k, v in (("rubric", rubric), ("pairwise", pairwise)) if v}
    return {"rank_recovery": rank, "pairwise": pair, "malformed": parse, "assessment": assess(rank, pair, parse, goals)}


def validate(config: JudgeConfig, panel: PanelConfig, model: str | None, out: Path, *, questions: int,
             pairwise_questions: int, goals: Goals = Goals(), planted_file: Path = PLANTED, command: str = "",
             progress: Callable[[str], None] = lambda _: None, ask_missing: bool = True) -> dict[str, Path]:
    """Ask what is missing (unless `ask_missing` is False: figures from the verdicts on file), then write the files."""
    planted = load_planted(planted_file)[:questions]
    if not planted:
        raise ValidityError(f"{planted_file} holds no planted questions")
    out.mkdir(parents=True, exist_ok=True)
    judge = LLMJudge(config, panel, model)
    started = time.time()
    if ask_missing:
        ask(judge, planted, out, pairwise_questions, progress)
    ids = {p.id for p in planted}
    records = [r for r in read_records(out / VERDICTS_FILE) if r["question_id"] in ids]
    if not records:
        raise ValidityError(f"{out / VERDICTS_FILE} holds no verdicts for these questions")
    result = {
        "judge": {"name": config.name, "url": config.url, "model": model, "api": config.api,
                  "protocols": config.protocols, "rubric_verdict": config.rubric_verdict,
                  "rubric_prompt": config.rubric_prompt, "pairwise_prompt": config.pairwise_prompt,
                  "max_tokens": config.max_tokens, "temperature": config.temperature,
                  "parse_retries": config.parse_retries},
        "planted": {"file": str(planted_file), "questions": len({r["question_id"] for r in records if r["kind"] == "rubric"}),
                    "pairwise_questions": len({r["question_id"] for r in records if r["kind"] == "pairwise"}),
                    "levels": list(LEVELS)},
        **figures(records, goals),
        "run": {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "wall_s_this_run": round(time.time() - started, 1), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "verdicts": len(records)},
    }
    from eval.validity_report import render_markdown

    files = {"json": out / "judge_validity.json", "markdown": out / "judge_validity.md"}
    files["json"].write_text(json.dumps(result, indent=2) + "\n")
    files["markdown"].write_text(render_markdown(result))
    return files
