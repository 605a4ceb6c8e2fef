"""OpenAI request and response bodies: chat completions, completions, models (vLLM's extras `top_k` and
`repetition_penalty` accepted), and the error body."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve.api.schemas import Body, Energy, Handoff, Source, integral
from serve.api.structured import ONE_FORMAT, ResponseFormat, StructuredOutputs, check_one_format
from serve.engine.types import SamplingParams


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)

    include_usage: bool = False


class OpenAISampling(BaseModel):
    """The sampling fields both OpenAI routes share (vLLM's extras `top_k` and `repetition_penalty` included)."""

    # Strict, as OpenAI's API: a wrong JSON type is refused ("stream": "yes" is not true), never coerced.
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=ONE_FORMAT)

    model: str = ""
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=1e-6, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    n: int = Field(1, ge=1, le=1, description="Only one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, description="Any non-negative integer (the generator uses it modulo 2**64)")
    _sampling_integers = integral('top_k', 'n', 'seed')
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    # Bounded so that penalised logits stay finite (a NaN would fail the whole batch's decode step).
    repetition_penalty: float | None = Field(None, ge=0.01, le=10.0)
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = Field(None, description="vLLM's structured outputs")

    @model_validator(mode="after")
    def _one_format(self):
        check_one_format(self.model_fields_set)
        return self

    def _sampling(self, max_new_tokens: int, top_n: int, **extra) -> SamplingParams:
        # OpenAI's default temperature is 1 (sampling); 0 is greedy, and so is anything below 1e-5 (as vLLM does:
        # dividing logits by it would overflow).
        temperature = 1.0 if self.temperature is None else self.temperature
        temperature = 0.0 if temperature < 1e-5 else temperature
        return SamplingParams(
            max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature, top_p=self.top_p,
            top_k=self.top_k if self.top_k and self.top_k > 0 else None, repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty, presence_penalty=self.presence_penalty, seed=self.seed,
            stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []), top_n_tokens=top_n,
            grammar=(self.response_format.grammar() if self.response_format else None)
            or (self.structured_outputs.grammar() if self.structured_outputs else None),
            **extra,
        )


class ChatCompletionRequest(OpenAISampling):
    # What the validator below enforces, said in the schema too: top_logprobs > 0 needs logprobs true.
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"top_logprobs": {"type": "integer", "minimum": 1}}, "required": ["top_logprobs"]},
        "then": {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]}, **ONE_FORMAT,
    })

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=5)
    _integers = integral('max_tokens', 'max_completion_tokens', 'top_logprobs')
    user: str | None = None

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs=true")
        return self

    def sampling(self, default_max: int) -> SamplingParams:
        return self._sampling(self.max_completion_tokens or self.max_tokens or default_max, self.top_logprobs or 0,
                              logprobs=self.logprobs)

    def chat_messages(self) -> list[dict]:
        return [m.as_dict() for m in self.messages]


# ---- responses ------------------------------------------------------------------------------------------------
class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Prompt tokens whose keys and values came from the prefix cache")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float | None
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(Body):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice] = Field(min_length=1)
    usage: Usage
    energy: Energy
    handoff: Handoff
    sources: list[Source] | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(Body):
    """One `data:` event of a streamed chat completion (then `data: [DONE]`)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    energy: Energy | None = None
    handoff: Handoff | None = None
    sources: list[Source] | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float | None]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    stop_reason: str | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(Body):
    """A text completion, and each `data:` event of a streamed one (`choices` empty on the usage event)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    energy: Energy | None = None


class LoraInfo(BaseModel):
    r: int
    alpha: float
    target_modules: list[str]


class ModelCard(Body):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "supportkit"
    root: str
    parent: str | None
    max_model_len: int
    lora: LoraInfo | None = None
    manifest: dict | None = None


class ModelList(Body):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(min_length=1)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error body (also sent as a `data:` event when a stream fails after it began)."""

    error: ErrorDetail
