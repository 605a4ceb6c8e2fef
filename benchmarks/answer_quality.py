"""Are the answers right? The base model, the previous demo adapter and the shipped one, through the real server.

Questions: benchmarks/data/answer_quality_questions.jsonl, 46 natural customer messages with reference answers
written for this benchmark, independently of the data generator's templates: 24 informational or account
questions (porting, eSIM, roaming prices, plan limits, what a term means), 12 faults with no evidence for a
cause, 10 faults where the customer's words point to one (`evidence`: the glossary cause id). None is a
training conversation. Every model is asked through `supportkit serve` (OpenAI chat route), greedy, with the
same token limit; an adapter trained grounded (its manifest records the knowledge base and k) is grounded by
the server exactly as at training, the base model is not.

Scores (mean over questions, with 95% bootstrap intervals over questions, 2,000 resamples, seed 0):
- cosine: all-MiniLM-L6-v2 cosine between answer and reference (the eval reference judge's model);
- rouge_l: ROUGE-L F1 (rouge-score, stemmed) between answer and reference;
- degenerate: the share of answers that are empty or under 5 words, stop at the token limit (the turn never
  ended), or loop (one word 3-gram 4 times or more);
- cause_without_evidence: over the 12 no-evidence faults, the share of answers that assert a cause: a
  sentence (or list item) that names one of the glossary's 10 causes, or says "most likely/probably cause",
  "points to", "is caused by / due to", "the cause/problem/reason is", "my first guess", "this usually means",
  "it suggests", with no hedge before it in that sentence ("if", "whether", "could", "might", "may", "can");
- cause_named_with_evidence: over the 10 evidence faults, the share that name the evidenced glossary cause;
- fault_script_on_info: over the 24 informational questions, the share answered with a fault script (any
  cause name or cause assertion as above, hedged or not);
- definition_contradicts_glossary: over the 6 "what is / what does X mean" questions, the share whose
  answer's first two sentences do not have the asked term's glossary entry among their two nearest entries
  (MiniLM cosine over the 52), or are below 0.4 cosine to it: the answer defines the term as something else,
  or as nothing a customer could check against the glossary. An approximation of "contradicts", stated as such
  (the references pass it: 0 of 6).
Baselines, scored the same way against the references: echo (the question itself as the answer) and wrong
reference (the reference answer of another question, a fixed derangement).
Retrieval cost: 10 sequential 1-token requests to the shipped adapter; the server's retrieval histogram
(/metrics) over those requests against their median time to first token (= request time at 1 token).
An LLM judge's 1-5 grade is optional, not part of the default run: --judge DIR (a prepared offline judge served
by the kit for the grading) or --judge-url URL --judge-model NAME (an OpenAI-compatible endpoint);
reference-guided, schema-constrained JSON verdict; every target is graded and so are the echo and
wrong-reference baselines, the judge's floor. Grades are kept with the answers, so a later run re-uses them
until the judge is run again.

    .venv/bin/python benchmarks/answer_quality.py --old-adapter DIR [--targets base,old,new] [--max-tokens 320]
    .venv/bin/python benchmarks/answer_quality.py --targets "" --judge ~/.cache/supportkit/models/qwen2.5-coder-1.5b-instruct

Answers are kept in benchmarks/results/answer_quality_answers.json, so that targets can be run separately
(a run asks only for the targets given and scores every target recorded). Results: answer_quality.json, .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.cpu import describe  # noqa: E402
from common.server_process import ServerProcess  # noqa: E402

QUESTIONS = ROOT / "benchmarks" / "data" / "answer_quality_questions.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
NEW, OLD = "telecom-support", "telecom-support-v1"
HEDGES = re.compile(r"\b(if|whether|could|might|may|can)\b")
ASSERT = re.compile(r"\b(most likely|probably|likely) (the )?(cause|reason|due)|\bpoints? to\b|\bis (caused|due) (by|to)\b"
                    r"|\bthe (cause|problem|issue|reason) is\b|\bmy first guess\b|\bthis usually means\b|\bit suggests\b")


def load_questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


# --- asking ------------------------------------------------------------------------------------------------
BATCH = 24  # the server's batch size here: two waves of questions, and none waits in the server's queue


async def ask_all(url: str, model: str, questions: list[dict], max_tokens: int, batch: int = BATCH) -> list[dict]:
    """All questions, `batch` at a time (the server's batch size: none waits in its queue)."""
    gate = asyncio.Semaphore(batch)
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        async def one(q):
            async with gate:
                r = await client.post("/v1/chat/completions", json={
                    "model": model, "messages": [{"role": "user", "content": q["question"]}],
                    "temperature": 0, "max_tokens": max_tokens})
            r.raise_for_status()
            body = r.json()
            return {"id": q["id"], "answer": body["choices"][0]["message"]["content"],
                    "finish_reason": body["choices"][0]["finish_reason"], "tokens": body["usage"]["completion_tokens"],
                    "prompt_tokens": body["usage"]["prompt_tokens"], "sources": [s["id"] for s in body.get("sources", [])]}
        return await asyncio.gather(*(one(q) for q in questions))


def _metric(text: str, name: str, adapter: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{adapter="{adapter}"}}'):
            return float(line.split()[-1])
    return 0.0


def retrieval_cost(url: str, questions: list[dict], n: int = 10) -> dict:
    """Sequential 1-token requests: their median time (= time to first token) and the mean retrieval time."""
    before = httpx.get(url + "/metrics").text
    times = []
    for q in questions[:n]:
        t0 = time.perf_counter()
        httpx.post(url + "/v1/chat/completions", timeout=600, json={
            "model": NEW, "messages": [{"role": "user", "content": q["question"]}], "temperature": 0, "max_tokens": 1})
        times.append(time.perf_counter() - t0)
    after = httpx.get(url + "/metrics").text
    name = "supportkit_retrieval_duration_seconds"
    count = _metric(after, name + "_count", NEW) - _metric(before, name + "_count", NEW)
    total = _metric(after, name + "_sum", NEW) - _metric(before, name + "_sum", NEW)
    mean = total / count if count else None
    ttft = statistics.median(times)
    return {"requests": n, "median_ttft_s": ttft, "mean_retrieval_s": mean,
            "retrieval_share_of_ttft": (mean / ttft) if mean is not None else None}


def run_server(targets: list[str], old_adapter: Path | None, questions, max_tokens: int) -> tuple[dict, dict | None]:
    store = Path(tempfile.mkdtemp(prefix="aq-store-"))
    try:
        shutil.copytree(ROOT / "serve" / "adapters" / NEW, store / NEW)
        if old_adapter:
            shutil.copytree(old_adapter, store / OLD)
        server = ServerProcess(["--adapters", str(store)], log=store.parent / f"{store.name}.log",
                               env={"SUPPORTKIT_SERVE_REQUEST_TIMEOUT_S": "3600",
                                    "SUPPORTKIT_SERVE_MAX_BATCH_SIZE": str(BATCH)}).wait_ready(600)
        try:
            base = httpx.get(server.url + "/info").json()["model_id"]
            names = {"base": base, "old": OLD, "new": NEW}
            out = {}
            for t in targets:
                t0 = time.perf_counter()
                out[t] = {"model": names[t], "replies": asyncio.run(ask_all(server.url, names[t], questions, max_tokens)),
                          "seconds": round(time.perf_counter() - t0, 1)}
                print(f"{t}: {len(out[t]['replies'])} answers in {out[t]['seconds']} s", flush=True)
            cost = retrieval_cost(server.url, questions) if "new" in targets else None
        finally:
            server.stop()
        return out, cost
    finally:
        shutil.rmtree(store, ignore_errors=True)


# --- scoring -----------------------------------------------------------------------------------------------
def pieces(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n|(?<=[.!?])\s+", text.lower()) if p.strip()]


def cause_assertions(text: str, cause_names: list[str], hedged_too: bool = False) -> bool:
    for piece in pieces(text):
        for m in [*(re.search(re.escape(c), piece) for c in cause_names), ASSERT.search(piece)]:
            if m and (hedged_too or not HEDGES.search(piece[: m.start()])):
                return True
    return False


def degenerate(reply: dict) -> bool:
    words = reply["answer"].split()
    if len(words) < 5 or reply["finish_reason"] == "length":
        return True
    grams = [" ".join(words[i:i + 3]).lower() for i in range(len(words) - 2)]
    return any(grams.count(g) >= 4 for g in set(grams))


def bootstrap(values: list[float], n: int = 2000, seed: int = 0) -> dict:
    if not values:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(n))
    return {"mean": statistics.fmean(values), "lo": means[int(0.025 * n)], "hi": means[int(0.975 * n) - 1],
            "n": len(values)}


def paired_difference(a: list[float], b: list[float], n: int = 2000, seed: int = 0) -> dict:
    rng = random.Random(seed)
    idx = range(len(a))
    diffs = sorted(statistics.fmean(a[i] - b[i] for i in rng.choices(idx, k=len(a))) for _ in range(n))
    return {"mean": statistics.fmean(x - y for x, y in zip(a, b)), "lo": diffs[int(0.025 * n)], "hi": diffs[int(0.975 * n) - 1]}


class Scorer:
    def __init__(self):
        from rouge_score import rouge_scorer

        from common.embedding import embed
        from common.knowledge import load_knowledge
        from train.data.glossary import load_glossary

        self.embed = embed
        self.rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        glossary = load_glossary()
        self.causes = [c.name.lower() for c in glossary.causes]
        self.cause_by_id = {c.id: c.name.lower() for c in glossary.causes}
        kb = load_knowledge()
        self.term_ids = [e.id for e in kb.entries]
        self.term_vecs = embed([f"{e.title}: {e.text}" for e in kb.entries])

    def cosine(self, answers: list[str], references: list[str]) -> list[float]:
        a, r = self.embed(answers), self.embed(references)
        return [max(0.0, float(x @ y)) for x, y in zip(a, r)]

    def rouge_l(self, answers: list[str], references: list[str]) -> list[float]:
        return [self.rouge.score(r, a)["rougeL"].fmeasure for a, r in zip(answers, references)]

    def contradicts(self, answer: str, term: str) -> bool:
        head = " ".join(re.split(r"(?<=[.!?])\s+", answer.strip())[:2])
        sims = self.term_vecs @ self.embed([head])[0]
        own = float(sims[self.term_ids.index(term)])
        top2 = [self.term_ids[i] for i in sims.argsort()[::-1][:2]]
        return term not in top2 or own < 0.4

    def target(self, questions: list[dict], replies: list[dict]) -> dict:
        by_id = {r["id"]: r for r in replies}
        rs = [by_id[q["id"]] for q in questions]
        answers, refs = [r["answer"] for r in rs], [q["reference"] for q in questions]
        cos, rouge = self.cosine(answers, refs), self.rouge_l(answers, refs)
        no_ev = [cause_assertions(r["answer"], self.causes) for q, r in zip(questions, rs)
                 if q["kind"] == "fault" and not q["evidence"]]
        ev = [self.cause_by_id[q["evidence"]] in r["answer"].lower() for q, r in zip(questions, rs) if q["evidence"]]
        info = [cause_assertions(r["answer"], self.causes, hedged_too=True) for q, r in zip(questions, rs)
                if q["kind"] == "info"]
        defs = [self.contradicts(r["answer"], q["term"]) for q, r in zip(questions, rs) if q["definition"]]
        return {
            "cosine": bootstrap(cos), "rouge_l": bootstrap(rouge),
            "degenerate": bootstrap([float(degenerate(r)) for r in rs]),
            "cause_without_evidence": bootstrap([float(x) for x in no_ev]),
            "cause_named_with_evidence": bootstrap([float(x) for x in ev]),
            "fault_script_on_info": bootstrap([float(x) for x in info]),
            "definition_contradicts_glossary": bootstrap([float(x) for x in defs]),
            "median_tokens": statistics.median(r["tokens"] for r in rs),
            "ended_turn": sum(r["finish_reason"] == "stop" for r in rs) / len(rs),
            "_cos": cos,
        }


def baselines(scorer: Scorer, questions: list[dict]) -> dict:
    refs = [q["reference"] for q in questions]
    echo = [q["question"] for q in questions]
    shift = len(questions) // 2 + 1  # a fixed derangement: each question gets another's reference
    wrong = [refs[(i + shift) % len(refs)] for i in range(len(refs))]
    out = {}
    for name, answers in (("echo", echo), ("wrong_reference", wrong)):
        cos = scorer.cosine(answers, refs)
        out[name] = {"cosine": bootstrap(cos), "rouge_l": bootstrap(scorer.rouge_l(answers, refs)), "_cos": cos}
    return out


# --- optional LLM judge ------------------------------------------------------------------------------------
JUDGE_PROMPT = """You grade a telecom customer-support answer against a reference answer.
Question: {question}
Reference answer: {reference}
Answer to grade: {answer}
Grade 1-5: 5 = as correct and useful as the reference; 3 = partly right, with gaps or a minor error; 1 = wrong,
off-topic or harmful. Reply with JSON only: {{"grade": N}}"""


GRADE_SCHEMA = {"type": "object", "properties": {"grade": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
                "required": ["grade"], "additionalProperties": False}


def judge_grades(url: str, model: str, questions: list[dict], answers: dict[str, str], concurrency: int = 8) -> dict:
    """The judge's grade of each answer (by question id), asked concurrently, verdicts schema-constrained
    (an endpoint that ignores response_format still parses when it answers as told)."""
    async def grade(client, sem, q):
        prompt = JUDGE_PROMPT.format(question=q["question"], reference=q["reference"], answer=answers[q["id"]])
        async with sem:
            r = await client.post("/v1/chat/completions", json={
                "model": model, "temperature": 0, "max_tokens": 20, "messages": [{"role": "user", "content": prompt}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "grade", "schema": GRADE_SCHEMA}}})
        m = re.search(r'"grade"\s*:\s*([1-5])', r.json()["choices"][0]["message"]["content"]) if r.status_code == 200 else None
        return float(m.group(1)) if m else None

    async def grade_all():
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=3600) as client:
            return await asyncio.gather(*(grade(client, sem, q) for q in questions))

    grades = [g for g in asyncio.run(grade_all()) if g is not None]
    return {"grade": bootstrap(grades), "parsed": len(grades), "asked": len(questions)}


def judge_everything(url: str, model: str, questions: list[dict], recorded: dict) -> dict:
    """Grades of every recorded target and of the echo and wrong-reference baselines (the judge's floor)."""
    shift = len(questions) // 2 + 1  # the same derangement as baselines()
    sets = {t: {r["id"]: r["answer"] for r in rec["replies"]} for t, rec in recorded["targets"].items()}
    sets["echo"] = {q["id"]: q["question"] for q in questions}
    sets["wrong_reference"] = {q["id"]: questions[(i + shift) % len(questions)]["reference"] for i, q in enumerate(questions)}
    out = {}
    for name, answers in sets.items():
        t0 = time.perf_counter()
        out[name] = judge_grades(url, model, questions, answers)
        print(f"judge: {name} graded in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def served_judge(model_dir: Path, questions: list[dict], recorded: dict) -> dict:
    """The offline judge (a prepared model directory) served by the kit's own engine for the grading only."""
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(["--model", str(model_dir), "--adapters", str(Path(tmp) / "no-adapters"),
                                "--max-batch-size", "8"], log=Path(tmp) / "judge.log",
                               env={"SUPPORTKIT_SERVE_REQUEST_TIMEOUT_S": "3600"})
        with server:
            server.wait_ready(900)
            name = httpx.get(server.url + "/info").json()["model_id"]
            return {"judge": f"{model_dir.name}, served by the kit", "targets": judge_everything(server.url, name, questions, recorded)}


# --- report ------------------------------------------------------------------------------------------------
def fmt(ci: dict, pct: bool = False) -> str:
    if ci.get("mean") is None:
        return "n/a"
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.3f}")
    return f"{f(ci['mean'])} [{f(ci['lo'])}, {f(ci['hi'])}]"


def markdown(report: dict) -> str:
    rows = [("cosine", False), ("rouge_l", False), ("degenerate", True), ("cause_without_evidence", True),
            ("cause_named_with_evidence", True), ("fault_script_on_info", True), ("definition_contradicts_glossary", True)]
    names = [t for t in ("base", "old", "new") if t in report["targets"]]
    head = "| | " + " | ".join(f"{t} ({report['targets'][t]['model']})" for t in names) + " | echo | wrong reference |"
    lines = [f"# Answer quality: base model, previous and shipped demo adapter", "",
             f"{report['date']} · {report['machine']} · greedy, max_tokens {report['max_tokens']} · "
             f"{report['questions']} questions · `{report['command']}`", "",
             "Means with 95% bootstrap intervals over questions (definitions: the script's docstring).", "",
             head, "|" + "---|" * (len(names) + 3)]
    for key, pct in rows:
        cells = [fmt(report["targets"][t]["scores"][key], pct) for t in names]
        base = [fmt(report["baselines"][b][key]) if key in report["baselines"][b] else "" for b in ("echo", "wrong_reference")]
        lines.append(f"| {key} | " + " | ".join(cells + base) + " |")
    lines.append("| median reply tokens | " + " | ".join(str(report["targets"][t]["scores"]["median_tokens"]) for t in names) + " | | |")
    lines.append("| ended its turn | " + " | ".join(f"{100 * report['targets'][t]['scores']['ended_turn']:.0f}%" for t in names) + " | | |")
    lines += ["", "Paired differences in cosine (95% bootstrap):", ""]
    for k, v in report["differences"].items():
        lines.append(f"- {k}: {fmt(v)}")
    if report.get("retrieval"):
        r = report["retrieval"]
        lines += ["", f"Retrieval: mean {1000 * (r['mean_retrieval_s'] or 0):.1f} ms per request against a median time to "
                  f"first token of {1000 * r['median_ttft_s']:.0f} ms ({100 * (r['retrieval_share_of_ttft'] or 0):.1f}%), "
                  f"{r['requests']} sequential 1-token requests to {NEW}."]
    if report.get("judge"):
        graded = report["judge"]["targets"]
        lines += ["", f"Reference-guided LLM judge ({report['judge']['judge']}; 1-5, greedy, schema-constrained "
                  "verdict; its validity: benchmarks/results/judge_validity.md): "
                  + ", ".join(f"{t} {fmt(g['grade'])} ({g['parsed']}/{g['asked']} parsed)" for t, g in graded.items())]
        floor = max((graded[b]["grade"]["mean"] or 0) for b in ("echo", "wrong_reference") if b in graded)
        above = [t for t in names if t in graded and (graded[t]["grade"]["mean"] or 0) > floor]
        lines += ["", f"Targets graded above both baselines (the echoed question, another question's reference): "
                  f"{', '.join(above) or 'none'}." + ("" if above == names else
                  " A judge that grades a baseline as high as an answer does not measure answer quality here: "
                  "its grades are not evidence for or against a target.")]
    lines += ["", "## Sample answers", ""]
    for q in report["samples"]:
        lines.append(f"**{q['question']}**")
        for t in names:
            lines.append(f"- *{t}*: {q[t][:600]}")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="base,old,new", help="which to ask now: base, old, new")
    ap.add_argument("--old-adapter", type=Path, help="the previous demo adapter's directory (target `old`)")
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--judge", type=Path, help="grade with this prepared judge model, served by the kit "
                    "(e.g. ~/.cache/supportkit/models/qwen2.5-coder-1.5b-instruct, `supportkit model prepare --judge`)")
    ap.add_argument("--judge-url", help="or an OpenAI-compatible judge endpoint (its /v1 base's parent)")
    ap.add_argument("--judge-model")
    args = ap.parse_args()
    questions = load_questions()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if "old" in targets and not args.old_adapter:
        ap.error("target `old` needs --old-adapter DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "answer_quality_answers.json"
    recorded = json.loads(cache.read_text()) if cache.is_file() else {"targets": {}}
    if targets:
        asked, cost = run_server(targets, args.old_adapter, questions, args.max_tokens)
        recorded["targets"].update(asked)
        recorded.pop("judge", None)  # its grades were of the answers just replaced
        if cost:
            recorded["retrieval"] = cost
        recorded["max_tokens"] = args.max_tokens
        cache.write_text(json.dumps(recorded, indent=1) + "\n")
    scorer = Scorer()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{describe()}, CPU only",
              "command": " ".join(["python", *sys.argv]), "max_tokens": recorded.get("max_tokens"),
              "questions": len(questions), "targets": {}, "baselines": baselines(scorer, questions),
              "retrieval": recorded.get("retrieval")}
    for t, rec in recorded["targets"].items():
        report["targets"][t] = {"model": rec["model"], "seconds": rec["seconds"], "scores": scorer.target(questions, rec["replies"])}
    diffs = {}
    cos = {t: report["targets"][t]["scores"].pop("_cos") for t in report["targets"]}
    echo = report["baselines"]["echo"].pop("_cos")
    report["baselines"]["wrong_reference"].pop("_cos")
    for t in cos:
        diffs[f"{t} - echo"] = paired_difference(cos[t], echo)
    if "new" in cos and "old" in cos:
        diffs["new - old"] = paired_difference(cos["new"], cos["old"])
    if "new" in cos and "base" in cos:
        diffs["new - base"] = paired_difference(cos["new"], cos["base"])
    report["differences"] = diffs
    if args.judge:
        recorded["judge"] = served_judge(args.judge, questions, recorded)
    elif args.judge_url and args.judge_model:
        recorded["judge"] = {"judge": f"{args.judge_model} at {args.judge_url}",
                             "targets": judge_everything(args.judge_url, args.judge_model, questions, recorded)}
    if args.judge or args.judge_url:
        cache.write_text(json.dumps(recorded, indent=1) + "\n")
    if recorded.get("judge"):
        report["judge"] = recorded["judge"]
    picks = [q for q in questions if q["id"] in ("porting-keep-number", "abroad-no-data", "los-meaning",
                                                  "speed-lower", "neighbours-down", "roaming-price")]
    report["samples"] = [{"question": q["question"], **{t: next(r["answer"] for r in rec["replies"] if r["id"] == q["id"])
                                                        for t, rec in recorded["targets"].items()}} for q in picks]
    (args.out / "answer_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "answer_quality.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
