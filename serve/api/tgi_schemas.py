"""TGI's request and response bodies (text-generation-inference's `generate` API)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve.engine.types import SamplingParams


class TGIParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

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
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: list[str] | None = None
    temperature: float | None = Field(None, ge=1e-4, le=100.0, description="Below 1e-4 logits overflow; use do_sample=false")
    top_k: int | None = Field(None, gt=0)
    top_n_tokens: int | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, ge=1e-6, lt=1.0)
    truncate: int | None = Field(None, ge=1)
    typical_p: float | None = Field(None, gt=0.0, lt=1.0)
    watermark: bool = False
    grammar: Any = None

    @field_validator("watermark")
    @classmethod
    def _no_watermark(cls, v):
        if v:
            raise ValueError("watermarking is not supported")
        return v

    @field_validator("grammar")
    @classmethod
    def _no_grammar(cls, v):
        if v is not None:
            raise ValueError("grammar-constrained generation is not supported")
        return v

    @field_validator("typical_p")
    @classmethod
    def _no_typical(cls, v):
        if v is not None:
            raise ValueError("typical_p is not supported")
        return v

    def sampling(self, default_max: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens or default_max, do_sample=self.do_sample, temperature=self.temperature,
            top_p=self.top_p, top_k=self.top_k, repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty, seed=self.seed, stop=list(self.stop or []),
            top_n_tokens=self.top_n_tokens or 0, logprobs=self.details,
            decoder_input_details=self.decoder_input_details, truncate=self.truncate,
        )


class TGIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str = Field(min_length=1)
    parameters: TGIParameters = Field(default_factory=TGIParameters)
    stream: bool = False


def token_json(t) -> dict:
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}
