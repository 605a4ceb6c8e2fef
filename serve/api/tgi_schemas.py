"""TGI's request and response bodies (text-generation-inference's `generate` API), and its error body."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve.api.schemas import Body, Handoff, Source, integral
from serve.api.structured import TGIGrammar
from serve.engine.types import SamplingParams


class TGIParameters(BaseModel):
    # Strict: a wrong JSON type is a 422, never coerced ("true" is not true, 1.0 is not an integer).
    model_config = ConfigDict(extra="ignore", strict=True)

    adapter_id: str | None = None
    best_of: int | None = Field(None, ge=1, le=1, description="Only 1 is supported")
    decoder_input_details: bool = False
    details: bool = True
    do_sample: bool = False
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    max_new_tokens: int | None = Field(None, ge=1)
    # Bounded so that penalised logits stay finite (a NaN would fail the whole batch's decode step).
    repetition_penalty: float | None = Field(None, ge=0.01, le=10.0)
    return_full_text: bool | None = False
    seed: int | None = Field(None, ge=0, description="Any non-negative integer (the generator uses it modulo 2**64)")
    stop: list[str] | None = None
    temperature: float | None = Field(None, ge=1e-4, le=100.0, description="Below 1e-4 logits overflow; use do_sample=false")
    top_k: int | None = Field(None, gt=0)
    top_n_tokens: int | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, ge=1e-6, lt=1.0)
    truncate: int | None = Field(None, ge=1)
    _integers = integral('best_of', 'max_new_tokens', 'seed', 'top_k', 'top_n_tokens', 'truncate')
    # Not supported: the schema says so (only null / false), and the refusal says why.
    typical_p: None = Field(None, description="Not supported (null only)")
    watermark: Literal[False] = Field(False, description="Not supported (false only)")
    grammar: TGIGrammar | None = Field(None, description="Structured output: the text matches this JSON schema or regex")

    @field_validator("watermark", "typical_p", mode="before")
    @classmethod
    def _unsupported(cls, v, info):
        if v is not (False if info.field_name == "watermark" else None):
            raise ValueError(f"{info.field_name} is not supported")
        return v

    def sampling(self, default_max: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens or default_max, do_sample=self.do_sample, temperature=self.temperature,
            top_p=self.top_p, top_k=self.top_k, repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty, seed=self.seed, stop=list(self.stop or []),
            top_n_tokens=self.top_n_tokens or 0, logprobs=self.details,
            decoder_input_details=self.decoder_input_details, truncate=self.truncate,
            grammar=self.grammar.grammar() if self.grammar else None,
        )


class TGIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    inputs: str = Field(min_length=1)
    parameters: TGIParameters = Field(default_factory=TGIParameters)
    stream: bool = False


# ---- responses ------------------------------------------------------------------------------------------------
class TGIToken(BaseModel):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False

    @classmethod
    def of(cls, t) -> TGIToken:
        return cls(id=t.id, text=t.text, logprob=t.logprob, special=t.special)


class StreamDetails(Body):
    finish_reason: Literal["length", "eos_token", "stop_sequence", "cancelled"]
    generated_tokens: int
    seed: int | None = None
    energy_joules: float | None = None
    energy_source: str = "unknown"
    handoff: Handoff | None = None
    sources: list[Source] | None = None


class Details(StreamDetails):
    prefill: list[TGIToken] = Field(default_factory=list)
    tokens: list[TGIToken] = Field(default_factory=list)
    top_tokens: list[list[TGIToken]] | None = None


class Generated(Body):
    generated_text: str
    details: Details | None = None


class StreamEvent(Body):
    """One `data:` event of /generate_stream: a token; the last one also carries the text and the details."""

    index: int
    token: TGIToken
    top_tokens: list[TGIToken] | None = None
    generated_text: str | None = None
    details: StreamDetails | None = None


class TGIError(BaseModel):
    """TGI's error body (also sent as a `data:` event when a stream fails after it began)."""

    error: str
    error_type: str


class Info(Body):
    model_id: str
    model_sha: str | None
    model_dtype: str
    model_device_type: str
    model_pipeline_tag: str = "text-generation"
    max_concurrent_requests: int
    max_best_of: int = 1
    max_stop_sequences: int
    max_input_tokens: int
    max_input_length: int
    max_total_tokens: int
    max_batch_size: int
    max_client_batch_size: int = 1
    max_adapters: int
    adapters: list[str]
    router: str = "supportkit"
    version: str
    sha: str | None = None
    docker_label: str | None = None
    validation_workers: int = 1
    waiting_served_ratio: float = 0.0
    max_waiting_tokens: int = 0
