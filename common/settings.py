"""Base for each component's settings: environment first, then explicit values from the entry point."""

from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict


class KitSettings(BaseSettings):
    """Subclasses set their own env prefix (e.g. SUPPORTKIT_SERVE_)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_ignore_empty=True)

    @classmethod
    def from_cli(cls, **overrides: Any):
        """CLI flags override the environment, which overrides defaults; unset flags (None) are skipped."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})
