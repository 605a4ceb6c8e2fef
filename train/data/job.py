"""The data step's entry point: scenarios -> conversations (offline or through an endpoint) -> dataset on disk.

`supportkit data generate` and the study both call `generate_dataset`; the command only parses and prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal


class DataError(ValueError):
    """Settings or inputs that cannot make a dataset; the message says what to fix."""


@dataclass
class GenerateSettings:
    out: Path  # conversations.jsonl + stats.json
    offline: bool = False  # compose from the glossary, or ask `endpoint`
    endpoint: str | None = None
    model: str | None = None  # the name the endpoint serves
    api: Literal["openai", "tgi"] = "openai"
    glossary: Path | None = None  # default: the kit's
    prompts: Path | None = None  # directory of prompt templates; default: the kit's
    per_scenario: int = 1
    scenarios: int | None = None  # a seeded sample of N scenarios; default: all
    seed: int = 0
    split_seed: int = 0
    val: float = 0.1
    test: float = 0.1
    cache: Path | None = None  # endpoint answer cache; default OUT/cache.jsonl
    concurrency: int = 4
    retries: int = 4
    backoff_s: float = 1.0
    temperature: float = 0.8
    max_tokens: int = 256
    min_chars: int = 20

    def check(self) -> None:
        if self.offline == bool(self.endpoint):
            raise DataError("choose exactly one of --offline or --endpoint URL")
        if self.per_scenario < 1:
            raise DataError("--per-scenario must be at least 1")
        if not (0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise DataError("--val and --test are shares between 0 and 1 whose sum is below 1")
        if self.endpoint and not self.model:
            raise DataError("--model is required with --endpoint (the name the endpoint serves)")
        if self.api not in ("openai", "tgi"):
            raise DataError("--api must be openai or tgi")


@dataclass
class GenerationResult:
    path: Path
    stats: dict
    endpoint_stats: dict | None = None  # requests, cache hits, retries (endpoint generation only)
    failed: list[str] = field(default_factory=list)  # conversations that failed; a re-run generates only those


def generate_dataset(s: GenerateSettings, progress: Callable[[int, int], None] | None = None) -> GenerationResult:
    """Generate, split by scenario, write; an endpoint run caches every answer, so a re-run pays only once."""
    from train.data.build import build_dataset, pick_scenarios
    from train.data.glossary import PROMPTS, load_glossary, scenarios as grid, system_prompt

    s.check()
    try:
        glossary = load_glossary(s.glossary)
        system = system_prompt((s.prompts or PROMPTS) / "system.txt")
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    chosen = pick_scenarios(grid(glossary), s.scenarios, s.seed)
    meta = {"generator": "offline" if s.offline else f"endpoint:{s.api}", "system_prompt": system, "seed": s.seed,
            "per_scenario": s.per_scenario, "glossary": str(s.glossary or "kit")}
    endpoint_stats, failed = None, []
    if s.offline:
        from train.data.offline import generate_offline

        items = generate_offline(chosen, s.per_scenario, system, glossary, s.seed)
    else:
        from train.data.endpoint import EndpointGenerator, EndpointSettings, ResponseCache

        settings = EndpointSettings(
            url=s.endpoint, model=s.model, api=s.api, temperature=s.temperature, max_tokens=s.max_tokens,
            concurrency=s.concurrency, retries=s.retries, backoff_s=s.backoff_s, min_chars=s.min_chars, seed=s.seed)
        gen = EndpointGenerator(settings, ResponseCache(s.cache or s.out / "cache.jsonl"), system, s.prompts or PROMPTS)
        try:
            items = gen.run(chosen, s.per_scenario, progress)
        finally:
            gen.close()
        endpoint_stats, failed = gen.stats.as_dict(), list(gen.stats.failed)
        meta.update(model=s.model, endpoint_stats=endpoint_stats, failed=failed[:20])
    path, stats = build_dataset(items, s.out, meta, split_seed=s.split_seed, val=s.val, test=s.test)
    return GenerationResult(path, stats, endpoint_stats, failed)
