"""Serving settings: flags > environment (SUPPORTKIT_SERVE_*) > defaults. Built once in the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import KitSettings

SHIPPED_ADAPTERS = Path(__file__).resolve().parent / "adapters"
DEFAULT_SYSTEM_PROMPT = (
    "You are a customer-support agent for a telecom operator. Help the customer with their fixed, mobile or "
    "internet service: explain clearly, give concrete troubleshooting steps, and offer to hand over to a human "
    "agent when you cannot solve the problem."
)


class ServeSettings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="SUPPORTKIT_SERVE_", extra="ignore", env_ignore_empty=True)

    model: str | None = Field(None, description="Base model directory (HF format); default: the embedded Gemma 3 270M")
    adapters: Path = Field(SHIPPED_ADAPTERS, description="Adapter store: one PEFT adapter per sub-directory")
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = Field("auto", pattern="^(auto|float32|bfloat16|float16)$")
    device: str = "auto"
    weights: Literal["bf16", "int8", "int4"] = Field(
        "bf16",
        description="Base weights: bf16 (the model's dtype), or int8 / int4 kernels for decode steps of few rows (CPU)",
    )
    max_batch_size: int = Field(8, ge=1, le=256)
    max_queue: int = Field(64, ge=1)
    max_adapters: int = Field(8, ge=1, description="Adapter slots resident at once (least recently used is evicted)")
    max_lora_rank: int = Field(64, ge=1)
    max_input_tokens: int = Field(2048, ge=1)
    max_total_tokens: int = Field(4096, ge=2)
    prefill_tokens: int = Field(4096, ge=1, description="Padded prompt tokens prefilled together in one pass")
    prefix_cache_mb: int = Field(512, ge=0, description="Memory for the keys and values of recent prompt prefixes, "
                                 "reused by later requests with the same adapter (the next turn of a chat); 0: off")
    max_new_tokens: int = Field(1024, ge=1, description="Upper bound a request may ask for")
    default_max_new_tokens: int = Field(256, ge=1)
    max_stop_sequences: int = 8
    max_request_bytes: int = Field(1_000_000, description="Largest request body accepted")
    request_timeout_s: float = Field(300.0, description="A generation still running after this is cancelled")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="Used when neither the chat nor the adapter has one")
    knowledge: Path | None = Field(None, description="Knowledge base for adapters trained grounded: a folder or file of "
                                   ".yaml/.jsonl/.md entries (docs/knowledge.md); default: the kit's glossary")
    watch_interval_s: float = Field(2.0, description="How often the adapter store is scanned; 0 disables")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins; none by default")
    metrics_max_adapters: int = Field(20, description="Adapters with their own metrics label; the rest are 'other'")
    # Remote engine: the kit's API, adapters and metrics in front of an existing TGI / LoRAX / vLLM deployment.
    engine: str = Field("local", pattern="^(local|tgi|lorax|vllm)$", description="local | tgi | lorax | vllm")
    engine_url: str | None = Field(None, pattern=r"^https?://[^\s]+$", description="Remote engine base URL (vLLM: its OpenAI base, e.g. http://vllm:8000/v1)")
    engine_timeout_s: float = Field(60.0, gt=0, description="Longest wait for the remote's next byte")
    engine_health_interval_s: float = Field(2.0, gt=0, description="How often the remote's /health is polled")
    engine_adapters: str | None = Field(None, description="TGI: comma-separated adapters it was started with, when its /info does not list them")
    engine_adapter_dir: str | None = Field(None, description="The adapter store's path as the remote sees it; default: the same path")
    energy_counter_url: str | None = Field(None, pattern=r"^https?://[^\s]+$", description="Prometheus endpoint of the remote GPUs' energy counter (DCGM exporter)")
    energy_counter_metric: str = Field("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", description="Counter in millijoules, summed over series")
    root_path: str = Field("", description="Public path prefix behind a proxy that strips it (e.g. /supportkit)")
    demo: bool = Field(True, description="Mount the support-desk demo page at /demo")
    feedback_db: Path | None = Field(None, description="SQLite file for demo feedback; default $SUPPORTKIT_CACHE/feedback.db")
    handoff_rules: Path | None = Field(None, description="Hand-off phrases per language (YAML); default: the kit's")
    redact_account_patterns: list[str] | None = Field(
        None, description="Regexes for customer account numbers (group 1 is redacted); default: keyword + number"
    )
    admin_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SUPPORTKIT_ADMIN_TOKEN", "admin_token"),
        description="Bearer token for /admin; admin routes are disabled without one",
    )
    admin_token_file: Path | None = Field(None, validation_alias=AliasChoices("SUPPORTKIT_ADMIN_TOKEN_FILE", "admin_token_file"))

    def token(self) -> str | None:
        if self.admin_token and self.admin_token.get_secret_value():
            return self.admin_token.get_secret_value()
        if self.admin_token_file and self.admin_token_file.is_file():
            return self.admin_token_file.read_text().strip() or None
        return None
