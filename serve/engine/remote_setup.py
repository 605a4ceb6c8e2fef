"""Builds the remote engine from the serving settings (the one place that reads its settings)."""

from __future__ import annotations

import logging

from serve.engine.remote import RemoteEngine
from serve.engine.remote_energy import CounterEnergy


def build_remote_engine(settings, model_dir) -> RemoteEngine:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per health poll
    if not settings.engine_url:
        raise ValueError(f"--engine {settings.engine} needs --engine-url (SUPPORTKIT_SERVE_ENGINE_URL)")
    energy = CounterEnergy(settings.energy_counter_url, settings.energy_counter_metric) if settings.energy_counter_url else None
    static = [a.strip() for a in settings.engine_adapters.split(",") if a.strip()] if settings.engine_adapters else None
    return RemoteEngine(
        model_dir, settings.engine, settings.engine_url, timeout_s=settings.engine_timeout_s,
        health_interval_s=settings.engine_health_interval_s, max_lora_rank=settings.max_lora_rank,
        max_input_tokens=settings.max_input_tokens, max_total_tokens=settings.max_total_tokens,
        static_adapters=static, adapter_dir=settings.engine_adapter_dir, energy=energy,
    )
