"""What every screen needs from the app: the workspace, its config and a clock (tests freeze it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.config import Config
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class ChatOptions:
    """How the chat pane loads and decodes (None: from the config)."""

    device: str = "auto"
    max_new_tokens: int | None = None
    greedy: bool | None = None


@dataclass(frozen=True)
class TuiContext:
    ws: Workspace
    config: Config | None
    clock: Callable[[], float]
    chat: ChatOptions = field(default_factory=ChatOptions)
