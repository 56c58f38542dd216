"""One small exception family; messages say what to do next.

The pipeline raises these; only the CLI and the TUI translate them for the user.
`exit_code` follows the CLI contract: 2 for bad input or config, 1 for failed work.
"""

from __future__ import annotations


class SteerError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 1

    def __init__(self, message: str, *, title: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.title = title or type(self).__name__

    def __str__(self) -> str:
        return self.message


class InputError(SteerError):
    """Bad input: config, dataset, rubric, vector or CLI arguments (exit 2)."""

    exit_code = 2


class ConfigError(InputError):
    """A `steertui.toml` key, env var or flag is wrong."""


class DataError(InputError):
    """A dataset file is malformed."""


class RubricError(InputError):
    """A rubric file is missing a field or malformed."""


class VectorError(InputError):
    """A steering vector is missing, malformed or does not fit the model."""


class ModelLoadError(InputError):
    """A model cannot be resolved or loaded."""


class JudgeError(SteerError):
    """A judge provider failed in a way retries cannot fix."""


class CredentialsError(InputError):
    """An API key is missing; the message names the environment variable."""


class BudgetExceeded(SteerError):
    """Spending would cross the configured budget; rerun with a larger one to continue."""


class StoreError(SteerError):
    """The SQLite store is unusable (locked, corrupt, newer schema)."""


class Interrupted(SteerError):
    """The user or a signal asked the work to stop (exit 130)."""

    exit_code = 130
