"""Open a provider from a `provider:model` spec; keys come from the environment only."""

from __future__ import annotations

import os

from pipeline.errors import ConfigError, CredentialsError
from pipeline.judges.base import CREDENTIAL_ENV, Provider


def split_spec(spec: str) -> tuple[str, str]:
    """`openai:gpt-4o` -> ("openai", "gpt-4o")."""
    name, _, model = spec.partition(":")
    if name not in CREDENTIAL_ENV or not model:
        raise ConfigError(f"judge: expected openai:MODEL or anthropic:MODEL, got {spec!r}")
    return name, model


def require_credentials(provider: str) -> str:
    """The provider's API key, or `CredentialsError` naming the variable to set."""
    var = CREDENTIAL_ENV[provider]
    value = os.environ.get(var, "").strip()
    if not value:
        raise CredentialsError(f"{var} is not set; export {var} (keys are read from the environment only)")
    return value


def open_provider(spec: str, *, base_url: str = "", timeout_s: float = 60.0) -> Provider:
    """A provider with one reused async client (SDK retries off); checks the key first."""
    name, model = split_spec(spec)
    key = require_credentials(name)
    if name == "openai":
        from pipeline.judges.openai_provider import OpenAIProvider

        return OpenAIProvider(model, api_key=key, base_url=base_url, timeout_s=timeout_s)
    from pipeline.judges.anthropic_provider import AnthropicProvider

    return AnthropicProvider(model, api_key=key, base_url=base_url, timeout_s=timeout_s)
