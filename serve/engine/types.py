"""What crosses the Engine interface: requests in; tokens, then one result, out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve.engine.grammar import Grammar


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    top_n_tokens: int = 0
    logprobs: bool = False  # each generated token's log-probability (TGI details, OpenAI logprobs)
    decoder_input_details: bool = False
    truncate: int | None = None
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks)
    grammar: Grammar | None = None  # structured output: what the text must match (serve.engine.grammar)

    @property
    def sampling(self) -> bool:
        """Sampling when asked, or when a sampling knob is set (TGI's rule); temperature 0 means greedy."""
        if self.temperature is not None and self.temperature == 0:
            return False
        return self.do_sample or (self.temperature not in (None, 1.0)) or bool(self.top_k) or (
            self.top_p is not None and self.top_p < 1.0
        )


@dataclass
class GenerationRequest:
    prompt: str
    adapter: str | None = None  # None: the base model
    params: SamplingParams = field(default_factory=SamplingParams)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Token:
    id: int
    text: str
    logprob: float | None = None
    special: bool = False
    top_tokens: list["Token"] | None = None
    last: bool = False  # the request's final token: its result follows at once


@dataclass
class Timings:
    queue_s: float = 0.0
    first_token_s: float = 0.0  # from arrival to the first token
    inference_s: float = 0.0  # from admission to the end
    total_s: float = 0.0


@dataclass
class GenerationResult:
    text: str
    finish_reason: str  # length | eos_token | stop_sequence
    tokens: list[Token]
    prompt_tokens: int
    seed: int | None
    prefill: list[Token] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    energy_joules: float | None = None
    energy_source: str = "unknown"
    energy_by_phase: dict[str, float] = field(default_factory=dict)
    adapter: str | None = None
    cached_tokens: int | None = None  # prompt tokens served from the prefix cache (None: the engine has none)

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)
