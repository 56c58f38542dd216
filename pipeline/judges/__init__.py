"""LLM calls exactly once, under a budget: providers, the ledger, sync and batch runners, judge prompts.

Stages build `Call`s (a `Request`, a parser, ledger labels) and pass them to `run_calls` with an opened
provider, a `Ledger` and a sink for finished answers; see `pipeline.judges.run`. Provider SDKs are
imported only when a provider is opened.
"""

from pipeline.judges.base import (
    TEXT,
    Call,
    Completion,
    ErrorKind,
    OutputSpec,
    Parser,
    Provider,
    ProviderError,
    Request,
    RunSettings,
    Usage,
    Verdict,
    parse_text,
)
from pipeline.judges.costs import estimate_usd, resolve_price, spend_summary
from pipeline.judges.ledger import Entry, Ledger
from pipeline.judges.providers import open_provider
from pipeline.judges.run import estimate_calls_usd, run_calls
from pipeline.judges.sync_runner import RunReport

__all__ = [
    "TEXT",
    "Call",
    "Completion",
    "Entry",
    "ErrorKind",
    "Ledger",
    "OutputSpec",
    "Parser",
    "Provider",
    "ProviderError",
    "Request",
    "RunReport",
    "RunSettings",
    "Usage",
    "Verdict",
    "estimate_calls_usd",
    "estimate_usd",
    "open_provider",
    "parse_text",
    "resolve_price",
    "run_calls",
    "spend_summary",
]
