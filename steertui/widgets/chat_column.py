"""One column of the chat pane: a conversation steered one way, its reply streamed in as it is decoded."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from steertui.widgets.glyphs import printable


class ChatColumn(VerticalScroll):
    """Messages top to bottom; `append` grows the reply being streamed."""

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="chat-column")
        self.border_title = label  # the steering of this column, on its frame
        self.reply = ""
        self._reply_box: Static | None = None

    @property
    def label(self) -> str:
        return str(self.border_title or "")

    def set_label(self, label: str) -> None:
        self.border_title = label

    def add_user(self, text: str) -> None:
        self.mount(Static(Text(printable(text)), classes="chat-user"))
        self.scroll_end(animate=False)

    def marker(self, text: str) -> None:
        self.mount(Static(Text(f"— {text} —", style="italic bright_black"), classes="chat-marker"))

    def start_reply(self) -> None:
        self.reply = ""
        self._reply_box = Static(Text("…", style="bright_black"), classes="chat-bot")
        self.mount(self._reply_box)
        self.scroll_end(animate=False)

    def append(self, text: str) -> None:
        if not text or self._reply_box is None:
            return
        self.reply += text
        self._reply_box.update(Text(printable(self.reply)))
        self.scroll_end(animate=False)

    def end_reply(self, error: str = "") -> None:
        if self._reply_box is not None:
            if error:
                self._reply_box.update(Text(error, style="red"))
            elif not self.reply:
                self._reply_box.update(Text("(empty reply)", style="bright_black"))
        self._reply_box = None
