"""Fake OpenAI/Anthropic HTTP API for tests and benchmarks (see :mod:`tests.fakeapi.server`)."""

from .answers import AnswerRequest, Kind, Provider, default_answer, output_spec, request_key
from .server import FakeAPIServer, build_app
from .state import Faults, Stats

__all__ = [
    "AnswerRequest",
    "FakeAPIServer",
    "Faults",
    "Kind",
    "Provider",
    "Stats",
    "build_app",
    "default_answer",
    "output_spec",
    "request_key",
]
