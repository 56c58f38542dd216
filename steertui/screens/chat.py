"""The Chat screen: talk to the steered model; compare up to four multipliers (or vectors) side by side.

All columns come from one loaded model and are decoded together in one batch, each row with its own
multiplier (`pipeline.chat_session`). The model loads in a worker with visible progress; torch is imported
there, the first time the pane needs it.
"""

from __future__ import annotations

import time
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, Label, ProgressBar, Static

from pipeline.chat_session import RowSpec
from pipeline.errors import InputError, SteerError
from steertui.messages import ChatDone, ChatStage, ChatTokens
from steertui.screens.base import BaseScreen
from steertui.screens.context import TuiContext
from steertui.widgets.chat_column import ChatColumn

FLUSH_S = 0.05  # at most ~20 UI updates a second while streaming
LOAD_STEPS = 3  # importing torch, loading the model, ready


class ChatScreen(BaseScreen):
    TITLE = "Chat"
    BINDINGS = [
        Binding("ctrl+l", "load", "Load model"),
        Binding("ctrl+r", "reset", "Reset"),
        Binding("ctrl+s", "save", "Save chat"),
        Binding("escape", "stop", "Stop / leave input", show=False),
    ]

    def __init__(self, ctx: TuiContext) -> None:
        super().__init__(ctx)
        self.session: Any = None  # pipeline.chat_session.ChatSession once loaded
        self.session_model = ""
        self.conversation: Any = None  # pipeline.chat_session.Conversation
        self.turn = 0
        self.busy = False
        self._pending: str | None = None
        self._stop = False

    def compose(self) -> ComposeResult:
        cfg = self.ctx.config
        spec = cfg.models[0] if cfg and cfg.models else None
        yield from self.header()
        with Horizontal(id="chat-controls"):
            yield Label("model")
            yield Input(spec.name if spec else "", id="chat-model")
            yield Label("layer")
            yield Input(str(spec.layers[0]) if spec else "0", id="chat-layer", type="integer")
            yield Label("epoch")
            yield Input(str(max(cfg.eval_epochs(spec))) if cfg and spec else "1", id="chat-epoch", type="integer")
            yield Label("×")
            yield Input("1", id="chat-mults", tooltip="1-4 multipliers, e.g. -1, 0, 1.5 or L2:E1:1.5")
        with Horizontal(id="chat-status-row"):
            yield Static("model not loaded: ctrl+l loads it (or just send a message)", id="chat-status")
            yield ProgressBar(total=LOAD_STEPS, show_eta=False, id="chat-progress")
        first = RowSpec(1.0, spec.layers[0] if spec else 0, max(cfg.eval_epochs(spec)) if cfg and spec else 1)
        yield Horizontal(ChatColumn(first.label), id="chat-columns")
        yield Input(placeholder="message (enter sends)", id="chat-input")
        yield from self.footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#chat-progress").display = False
        self.query_one("#chat-input", Input).focus()

    def on_unmount(self) -> None:
        self._stop = True  # a reply being decoded ends at its next token when the app quits

    def _value(self, name: str) -> str:
        return self.query_one(f"#chat-{name}", Input).value.strip()

    def rows(self) -> list[Any]:
        from pipeline.chat_session import parse_rows

        return parse_rows(self._value("mults") or "0", int(self._value("layer") or 0), int(self._value("epoch") or 1))

    # -- loading -------------------------------------------------------------------------------------------
    def action_load(self) -> None:
        model = self._value("model")
        if not model or self.busy:
            return
        self.busy = True
        self.query_one("#chat-progress", ProgressBar).update(progress=0)
        self.query_one("#chat-progress").display = True
        self.load_model(model)

    @work(thread=True, exclusive=True, group="chat-load", exit_on_error=False)
    def load_model(self, model: str) -> None:
        steps = iter(range(1, LOAD_STEPS))

        def stage(text: str) -> None:
            self.post_message(ChatStage(text, next(steps, LOAD_STEPS - 1), LOAD_STEPS))

        try:
            session = self._open(model, stage)
        except Exception as exc:  # a missing model, a CUDA OOM: a message, never a stuck pane
            reason = exc.message if isinstance(exc, SteerError) else f"{type(exc).__name__}: {exc}"
            self.post_message(ChatStage(f"cannot load {model}: {reason}", -1, LOAD_STEPS))
            return
        self.session, self.session_model = session, model
        dtype = str(session.loaded.dtype).removeprefix("torch.")
        self.post_message(ChatStage(f"{model} · {session.loaded.device} · {dtype}", LOAD_STEPS, LOAD_STEPS))

    def _open(self, model: str, stage: Any) -> Any:
        from pipeline.chat_session import ChatSession, Decoding

        config, opts = self.ctx.config, self.ctx.chat
        if config is None:
            raise InputError("steertui.toml did not load; fix it and reopen")
        decoding = Decoding.from_config(config, max_new_tokens=opts.max_new_tokens, greedy=opts.greedy)
        return ChatSession.open(self.ctx.ws, config, model, device=opts.device, decoding=decoding, on_stage=stage)

    @on(ChatStage)
    def _stage(self, event: ChatStage) -> None:
        bar = self.query_one("#chat-progress", ProgressBar)
        status = self.query_one("#chat-status", Static)
        if event.step < 0:
            self.busy = False
            bar.display = False
            status.update(event.text)
            self.notify(event.text, title="chat", severity="error")
            return
        bar.update(progress=event.step)
        status.update(("loaded " if event.step >= event.total else "") + event.text)
        if event.step >= event.total and self.session is not None:
            self.busy = False
            bar.display = False
            if self._pending is not None:
                text, self._pending = self._pending, None
                self.send(text)

    # -- turns ---------------------------------------------------------------------------------------------
    @on(Input.Submitted, "#chat-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.busy:
            self.notify("wait for the reply (escape stops it)", severity="warning", timeout=2)
            return
        event.input.value = ""
        if self.session is None or self.session_model != self._value("model"):
            self._pending = text
            self.action_load()
            return
        self.send(text)

    def send(self, text: str) -> None:
        """Start a turn: every column gets `text`; replies stream in, decoded as one batch."""
        from pipeline.chat_session import Conversation

        try:
            rows = self.rows()
        except (SteerError, ValueError) as exc:
            self.notify(str(exc), title="multipliers", severity="error")
            return
        if self.conversation is None:
            self.conversation = Conversation(rows)
            self._columns(rows)
        else:
            before = list(self.conversation.rows)
            if self.conversation.set_rows(rows):
                self._columns(rows)
                self.notify(f"{len(rows)} column(s): the conversation starts over", title="chat")
            elif rows != before:
                for column, row in zip(self._column_widgets(), rows, strict=True):
                    column.set_label(row.label)
                    column.marker(f"now {row.label}")
        sent = self.conversation.ask(text)
        for column in self._column_widgets():
            column.add_user(text)
            column.start_reply()
        self.turn += 1
        self.busy = True
        self._stop = False
        self.generate(sent, rows, self.turn)

    @work(thread=True, exclusive=True, group="chat-generate", exit_on_error=False)
    def generate(self, conversations: list[Any], rows: list[Any], turn: int) -> None:
        texts = [""] * len(rows)
        pending = [""] * len(rows)
        last = time.monotonic()
        try:
            for step in self.session.stream(conversations, rows, turn=turn, should_stop=lambda: self._stop):
                pending = [a + b for a, b in zip(pending, step.texts, strict=True)]
                if time.monotonic() - last >= FLUSH_S:
                    self.post_message(ChatTokens(turn, pending))
                    texts = [a + b for a, b in zip(texts, pending, strict=True)]
                    pending, last = [""] * len(rows), time.monotonic()
        except Exception as exc:  # a missing vector or a CUDA error ends the turn, not the app
            message = exc.message if isinstance(exc, SteerError) else f"{type(exc).__name__}: {exc}"
            self.post_message(ChatDone(turn, [], message))
            return
        self.post_message(ChatTokens(turn, pending))
        self.post_message(ChatDone(turn, [a + b for a, b in zip(texts, pending, strict=True)]))

    @on(ChatTokens)
    def _tokens(self, event: ChatTokens) -> None:
        if event.turn == self.turn:
            for column, text in zip(self._column_widgets(), event.texts, strict=False):
                column.append(text)

    @on(ChatDone)
    def _done(self, event: ChatDone) -> None:
        if event.turn != self.turn:
            return
        self.busy = False
        for column in self._column_widgets():
            column.end_reply(event.error)
        if event.error:
            self.notify(event.error, title="chat", severity="error")
            self.conversation.histories = [h[:-1] for h in self.conversation.histories]
            return
        self.conversation.answer(event.replies)

    # -- columns, reset, save ------------------------------------------------------------------------------
    def _column_widgets(self) -> list[ChatColumn]:
        return list(self.query(ChatColumn))

    def _columns(self, rows: list[Any]) -> None:
        box = self.query_one("#chat-columns", Horizontal)
        box.remove_children()
        box.mount_all([ChatColumn(row.label) for row in rows])

    def action_stop(self) -> None:
        """Stop the reply being decoded; otherwise leave the input (so 1-7 switch screens again)."""
        if self.busy:
            self._stop = True
        else:
            self._column_widgets()[0].focus()

    def action_reset(self) -> None:
        if self.busy:
            return
        self.conversation = None
        self.turn += 1
        try:
            rows = self.rows()
        except (SteerError, ValueError):
            rows = []
        self._columns(rows[:1] or [])
        self.notify("conversation cleared", title="chat", timeout=2)

    def action_save(self) -> None:
        if self.conversation is None or not self.conversation.log:
            self.notify("nothing to save yet", severity="warning")
            return
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.ctx.clock()))
        path = self.ctx.ws.root / "chats" / f"chat-{stamp}.txt"
        header = f"model {self.session_model} · {', '.join(r.label for r in self.conversation.rows)}"
        saved = self.conversation.save(path, header)
        self.notify(str(saved), title="chat saved")
