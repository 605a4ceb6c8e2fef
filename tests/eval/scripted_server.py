"""A scripted OpenAI-compatible (and TGI `POST /`) server on loopback, standing in for two real things:

- an endpoint under test whose adapters answer with planted quality: `good` answers with the reference answer,
  `degraded` with its first sentence and filler, `offtopic` with an unrelated text, the base model with a
  generic reply; their manifests plant validation losses in the *opposite* order (the study's finding);
- a hosted judge API (the real one cannot be reached from the tests): model `judge` returns well-formed
  verdicts that score an answer by its word overlap with the reference; `judge-broken` never returns a
  valid verdict; `judge-flaky` returns garbage to its first attempt (seed 0) and a verdict to retries.

`delay_s` slows every judge request (for kill-and-resume tests); `fail_first` makes the first request for
each distinct body answer 503 (for retry tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from eval.panel import RUBRIC_CRITERIA

BASE = "scripted-base"
ADAPTERS = {"good": 0.70, "degraded": 0.60, "offtopic": 0.50}  # planted val losses: best loss = worst answers
OFFTOPIC = "Our shops are open from nine to six on weekdays, and we sell phone cases in many colours."


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def overlap(answer: str, reference: str) -> float:
    a, r = _words(answer), _words(reference)
    return len(a & r) / len(a | r) if a | r else 0.0


def _between(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.S)
    return m.group(1) if m else ""


class Scripted:
    def __init__(self, references: dict[str, str], delay_s: float = 0.0, fail_first: bool = False):
        self.references = references
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.requests: Counter[str] = Counter()  # by model
        self.seen: set[str] = set()

    def answer(self, model: str, question: str) -> str:
        reference = self.references.get(question.strip(), "")
        if model == "good":
            return reference
        if model == "degraded":
            return reference.split(". ")[0] + ". Please contact us if you need anything else."
        if model == "offtopic":
            return OFFTOPIC
        return "Thank you for your message. Please restart your device and contact support if it persists."

    def judge(self, model: str, prompt: str, seed: int) -> str:
        if model == "judge-broken" or (model == "judge-flaky" and seed == 0):
            return "I think the answer is quite good overall, maybe a 4? {not json"
        reference = _between(prompt, "reference_answer")
        if "<answer_to_grade>" in prompt:
            score = 1 + round(4 * overlap(_between(prompt, "answer_to_grade"), reference))
            return "Here is my verdict:\n```json\n" + json.dumps(
                {"scores": {c: score for c in RUBRIC_CRITERIA}, "rationale": "overlap with the reference"}) + "\n```"
        a, b = overlap(_between(prompt, "answer_A"), reference), overlap(_between(prompt, "answer_B"), reference)
        winner = "tie" if abs(a - b) < 0.02 else ("A" if a > b else "B")
        return json.dumps({"winner": winner, "rationale": "closer to the reference"})


def build_app(scripted: Scripted) -> FastAPI:
    app = FastAPI()

    def manifest(name: str) -> dict:
        return {"name": name, "metrics": {"val_loss": ADAPTERS[name]}, "energy": {"kwh": {"total": ADAPTERS[name] / 10}}}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": BASE, "object": "model"}] + [
            {"id": n, "object": "model", "parent": BASE, "manifest": manifest(n)} for n in ADAPTERS]}

    async def maybe_fail(body: dict):
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if scripted.fail_first and key not in scripted.seen:
            scripted.seen.add(key)
            return JSONResponse({"error": {"message": "overloaded", "type": "overloaded"}}, status_code=503)
        return None

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body.get("model", "")
        scripted.requests[model] += 1
        if (failed := await maybe_fail(body)) is not None:
            return failed
        text = body["messages"][-1]["content"]
        if model.startswith("judge"):
            await asyncio.sleep(scripted.delay_s)
            content = scripted.judge(model, text, body.get("seed") or 0)
        elif model in ADAPTERS or model == BASE:
            content = scripted.answer(model, text)
        else:
            return JSONResponse({"error": {"message": f"unknown model {model}", "type": "invalid_request_error"}},
                                status_code=404)
        tokens = len(content.split())
        return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": tokens,
                          "total_tokens": len(text.split()) + tokens},
                "energy": {"joules": 0.5 * tokens, "source": "estimate"}}

    @app.post("/")
    async def tgi_compat(request: Request):
        body = await request.json()
        adapter = (body.get("parameters") or {}).get("adapter_id") or BASE
        scripted.requests[adapter] += 1
        question = re.findall(r"<start_of_turn>user\n(.*?)<end_of_turn>", body["inputs"], re.S)[-1]
        if adapter.startswith("judge"):
            text = scripted.judge(adapter, question, (body.get("parameters") or {}).get("seed") or 0)
        else:
            text = scripted.answer(adapter, question)
        details = {"finish_reason": "eos_token", "generated_tokens": len(text.split()), "seed": None,
                   "prefill": [], "tokens": [], "energy_joules": 0.25, "energy_source": "estimate"}
        return [{"generated_text": text, "details": details}]

    return app


class ScriptedServer:
    """uvicorn in a background thread of the test process."""

    def __init__(self, scripted: Scripted, port: int):
        self.scripted = scripted
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(build_app(scripted), host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ScriptedServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("scripted server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def demo_references(path: Path) -> dict[str, str]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["question"]: r["reference"] for r in records}
