"""An LLM judge: fills the prompt templates, asks the endpoint, parses the verdict, counts tokens and cost.

Verdicts are asked for constrained to their JSON schema (structured output: OpenAI `response_format`, TGI
`grammar`) where the endpoint enforces one; an endpoint that refuses that is asked without, from then on.
A malformed verdict is asked again (another seed, some sampling), then recorded as missing with the raw
output: a missing verdict is never turned into a score.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from common.http import EndpointError, with_retries
from eval.clients import Reply, make_chat
from eval.panel import JudgeConfig, PanelConfig
from eval.verdicts import VerdictError, parse_overall, parse_pairwise, parse_rubric, verdict_schema

log = logging.getLogger("supportkit.eval")

_SLOT = re.compile(r"\{\{\s*(\w+)\s*\}\}")
RETRY_TEMPERATURE = 0.7  # greedy decoding would repeat the same malformed output
# Words of a refusal that is about structured output itself (the endpoint cannot enforce a schema).
_STRUCTURED_WORDS = ("response_format", "grammar", "json_schema", "structured")


def fill(template: str, **values: str) -> str:
    """One pass over the template, so that text inside an answer is never itself substituted."""
    return _SLOT.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class LLMJudge:
    def __init__(self, config: JudgeConfig, panel: PanelConfig, model: str | None):
        self.config = config
        self.model = model
        self.chat = make_chat(config.api, config.url, config.api_key(), config.timeout_s)
        self.structured = config.structured  # off once the endpoint refuses structured output
        self.templates = {
            "rubric": panel.prompt(config.rubric_prompt) if "rubric" in config.protocols else "",
            "pairwise": panel.prompt(config.pairwise_prompt) if "pairwise" in config.protocols else "",
        }

    def _complete(self, prompt: str, temperature: float, seed: int, schema: dict) -> tuple[Reply, bool]:
        """The endpoint's reply, and whether it was constrained to the schema."""
        messages = [{"role": "user", "content": prompt}]
        cfg = self.config
        if self.structured:
            try:
                return self.chat.complete(self.model, messages, max_tokens=cfg.max_tokens, temperature=temperature,
                                          seed=seed, schema=schema), True
            except EndpointError as exc:
                if exc.status not in (400, 422) or not any(w in str(exc).lower() for w in _STRUCTURED_WORDS):
                    raise
                self.structured = False
                log.warning("judge %s: the endpoint refused structured output; asking without it: %s", cfg.name, exc)
        return self.chat.complete(self.model, messages, max_tokens=cfg.max_tokens, temperature=temperature,
                                  seed=seed), False

    def _ask(self, prompt: str, parse, schema: dict) -> dict[str, Any]:
        cfg = self.config
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        error, raw = "", ""
        for attempt in range(cfg.parse_retries + 1):
            temperature = cfg.temperature if attempt == 0 else max(cfg.temperature, RETRY_TEMPERATURE)
            reply, structured = with_retries(
                lambda: self._complete(prompt, temperature, cfg.seed + attempt, schema),
                max_retries=cfg.max_retries, backoff_s=cfg.backoff_s,
            )
            usage["prompt_tokens"] += reply.prompt_tokens or 0
            usage["completion_tokens"] += reply.completion_tokens or 0
            raw = reply.text
            try:
                return {"status": "ok", "verdict": parse(raw), "attempts": attempt + 1, "usage": usage,
                        "cost_usd": self.cost(usage), "structured": structured}
            except VerdictError as exc:
                error = str(exc)
        return {"status": "missing", "verdict": None, "attempts": cfg.parse_retries + 1, "usage": usage,
                "cost_usd": self.cost(usage), "error": error, "raw": raw[:2000]}

    def cost(self, usage: dict[str, int]) -> float:
        price = self.config.price
        return (usage["prompt_tokens"] * price.input_per_mtok + usage["completion_tokens"] * price.output_per_mtok) / 1e6

    def rubric(self, question: str, reference: str | None, answer: str) -> dict[str, Any]:
        prompt = fill(self.templates["rubric"], question=question, reference=reference or "(none given)",
                      answer=answer)
        overall = self.config.rubric_verdict == "overall"
        return self._ask(prompt, parse_overall if overall else parse_rubric, verdict_schema(self.config.rubric_verdict))

    def pairwise(self, question: str, reference: str | None, answer_a: str, answer_b: str) -> dict[str, Any]:
        prompt = fill(self.templates["pairwise"], question=question, reference=reference or "(none given)",
                      answer_a=answer_a, answer_b=answer_b)
        return self._ask(prompt, parse_pairwise, verdict_schema("pairwise"))
