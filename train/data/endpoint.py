"""Conversation generation through a live model endpoint (OpenAI-compatible or TGI), resumable and cached.

Each conversation takes two calls: the customer's first message, then the agent's reply to it, each from a
prompt template in train/configs/prompts/. Every raw answer is appended to a cache file keyed by everything
that determines it (endpoint kind, model, prompt, sampling settings, attempt), so a re-run after a failure or
a kill never pays for an answer twice: it sends only the calls that are missing. Answers that fail validation
are cached too (they were paid for) and retried with the next attempt's seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.http import EndpointError, client, json_response, with_retries
from common.journal import Journal
from train.data.glossary import PROMPTS, Scenario

API_KEY_ENV = "SUPPORTKIT_GENERATE_API_KEY"
MARKERS = ("<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>", "Customer:", "Agent:")


class InvalidOutput(Exception):
    pass


@dataclass
class EndpointSettings:
    url: str
    model: str
    api: str = "openai"  # "openai" (POST /v1/chat/completions) or "tgi" (POST /generate)
    temperature: float = 0.8
    max_tokens: int = 256
    concurrency: int = 4
    retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 120.0
    max_invalid: int = 3
    min_chars: int = 20
    max_chars: int = 2000
    seed: int = 0


@dataclass
class GenerationStats:
    requests: int = 0
    cache_hits: int = 0
    invalid: int = 0
    retried: int = 0
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "cache_hits": self.cache_hits, "invalid": self.invalid,
                "retried": self.retried, "failed": len(self.failed)}


class ResponseCache:
    """Every raw answer by key, in a journal of {key, text} lines: a killed run loses at most the answer in flight."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._journal = Journal(self.path)

    def get(self, key: str) -> str | None:
        record = self._journal.get(key)
        return record.get("text") if record else None

    def put(self, key: str, text: str) -> None:
        self._journal.append({"key": key, "text": text})

    def __len__(self) -> int:
        return len(self._journal)


def load_prompt(name: str, prompts_dir: Path = PROMPTS) -> str:
    path = prompts_dir / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} does not exist")
    return path.read_text()


class EndpointGenerator:
    def __init__(self, settings: EndpointSettings, cache: ResponseCache, system: str,
                 prompts_dir: Path = PROMPTS, post: Callable | None = None):
        self.s = settings
        self.cache = cache
        self.system = system
        self.customer_prompt = load_prompt("customer", prompts_dir)
        self.agent_prompt = load_prompt("agent", prompts_dir)
        self.customer_info_prompt = load_prompt("customer_info", prompts_dir)
        self.agent_info_prompt = load_prompt("agent_info", prompts_dir)
        self.stats = GenerationStats()
        self._stats_lock = threading.Lock()
        self._client = client(settings.url, os.environ.get(API_KEY_ENV), settings.timeout_s)
        self._post = post or self._client.post

    def close(self) -> None:
        self._client.close()

    def _count(self, attr: str) -> None:
        with self._stats_lock:
            setattr(self.stats, attr, getattr(self.stats, attr) + 1)

    # --- one call -------------------------------------------------------------------------------------------
    def _request(self, prompt: str, seed: int) -> str:
        s = self.s
        if s.api == "tgi":
            path = "/generate"
            body = {"inputs": prompt, "parameters": {
                "max_new_tokens": s.max_tokens, "temperature": s.temperature or None, "seed": seed,
                "do_sample": s.temperature > 0}}
        else:
            path = "/v1/chat/completions"
            body = {"model": s.model, "messages": [{"role": "user", "content": prompt}],
                    "temperature": s.temperature, "max_tokens": s.max_tokens, "seed": seed}

        def send():
            response = self._post(path, json=body)
            self._count("requests")
            return response

        def once() -> str:
            _, data = json_response(send, s.url.rstrip("/") + path)
            try:
                return data["generated_text"] if s.api == "tgi" else data["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError) as exc:
                raise EndpointError(f"{path} answered something that is not a {s.api} response: {exc!r}",
                                    retryable=False) from None

        return with_retries(once, max_retries=s.retries, backoff_s=s.backoff_s,
                            on_retry=lambda _: self._count("retried"))

    def _key(self, prompt: str, seed: int) -> str:
        s = self.s
        ident = json.dumps([s.api, s.model, prompt, s.temperature, s.max_tokens, seed])
        return hashlib.sha256(ident.encode()).hexdigest()

    def _validated(self, prompt: str, seed: int, validate: Callable[[str], str]) -> str:
        """A cached or fresh answer that passes validation, trying up to max_invalid seeds."""
        for attempt in range(self.s.max_invalid):
            key = self._key(prompt, seed + 7919 * attempt)
            text = self.cache.get(key)
            if text is None:
                text = self._request(prompt, seed + 7919 * attempt)
                self.cache.put(key, text)
            else:
                self._count("cache_hits")
            try:
                return validate(text)
            except InvalidOutput:
                self._count("invalid")
        raise InvalidOutput(f"no valid answer after {self.s.max_invalid} attempts")

    def _check(self, text: str, other: str = "") -> str:
        text = text.strip().strip('"').strip()
        for label in ("Customer:", "Agent:"):  # a leading role label is harmless; strip it
            text = text[len(label):].strip() if text.startswith(label) else text
        for marker in MARKERS:
            text = text.split(marker)[0].strip() if marker.startswith("<") else text
        if len(text) < self.s.min_chars:
            raise InvalidOutput("too short")
        if len(text) > self.s.max_chars:
            raise InvalidOutput("too long")
        if any(m in text for m in MARKERS[4:]):
            raise InvalidOutput("contains a role label: the model wrote a transcript")
        if other and text == other.strip():
            raise InvalidOutput("repeats the customer's message")
        return text

    # --- one conversation -----------------------------------------------------------------------------------
    def conversation(self, sc: Scenario, k: int) -> list[dict[str, str]]:
        """Faults: the customer gives the cue for the cause in half of the conversations, and the agent is told
        to name the cause only then. Informational scenarios: a question, answered from the glossary."""
        seed = int(hashlib.sha256(f"{self.s.seed}:{sc.id}:{k}".encode()).hexdigest()[:8], 16)
        pick = random.Random(seed)
        fields = {
            "term": sc.term.term, "definition": sc.term.definition, "symptom": pick.choice(sc.term.phrasings),
            "check": sc.term.check, "context_name": sc.context.name, "context_description": sc.context.description,
            "system_prompt": self.system,
        }
        if sc.informational:
            question = pick.choice(sc.term.questions or [f"What does {sc.term.short} mean?"])
            fields.update(question=question, answer=sc.term.answer or sc.term.check)
            customer_prompt, agent_prompt = self.customer_info_prompt, self.agent_info_prompt
        else:
            cue = pick.choice(sc.cause.evidence) if pick.random() < 0.5 else None
            fields.update(
                steps="; ".join(sc.cause.steps), escalation=sc.cause.escalation,
                evidence_note=(f"They also mention, in passing: {cue}." if cue else
                               "They say nothing about what might have caused it."),
                agent_rule=(f"The customer's words point to the cause: {sc.cause.name} ({sc.cause.explanation}); "
                            "name it and give its steps." if cue else
                            "The customer gave no evidence for any cause: do not name or guess one. Ask one targeted "
                            f"question (such as: {sc.cause.ask}) or go through the checks in order and say what each "
                            "result would mean."))
            customer_prompt, agent_prompt = self.customer_prompt, self.agent_prompt
        customer = self._validated(customer_prompt.format(**fields), seed, self._check)
        agent = self._validated(agent_prompt.format(**fields, customer_message=customer), seed + 1,
                                lambda t: self._check(t, customer))
        return [{"role": "system", "content": self.system}, {"role": "user", "content": customer},
                {"role": "assistant", "content": agent}]

    def run(self, scenarios: list[Scenario], per_scenario: int, progress: Callable[[int, int], None] | None = None):
        """Generate all conversations; returns (scenario, k, messages) for those that succeeded, in grid order."""
        jobs = [(sc, k) for sc in scenarios for k in range(per_scenario)]
        done: dict[tuple[str, int], tuple] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.s.concurrency)) as pool:
            futures = {pool.submit(self.conversation, sc, k): (sc, k) for sc, k in jobs}
            for n, fut in enumerate(as_completed(futures), 1):
                sc, k = futures[fut]
                try:
                    done[(sc.id, k)] = (sc, k, fut.result())
                except (EndpointError, InvalidOutput) as exc:
                    self.stats.failed.append(f"{sc.id}.{k}: {exc}")
                if progress:
                    progress(n, len(jobs))
        return [done[(sc.id, k)] for sc, k in jobs if (sc.id, k) in done]
