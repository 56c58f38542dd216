"""Steered chat: one loaded model, several conversations decoded together, each row with its own steering.

The TUI's chat pane and the `steertui chat` REPL share this module. A `ChatSession` holds the model, the
vectors it has loaded and the decoding settings (the config's `[generate]` T/top_p/top_k/greedy/seed and
`system_prompt`). `stream` decodes a batch of conversations with a KV cache, left padding and per-row
multipliers (one hook per distinct vector; rows of other vectors get multiplier 0 on it), and yields the
new text of every row after each step. A `Conversation` keeps the per-row histories and the transcript.

Example (the REPL): `steertui chat --model tiny-random --layer 1 --epoch 2 --multiplier 0 --multiplier 2`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError

if TYPE_CHECKING:
    import torch

    from pipeline.config import Config
    from pipeline.models import LoadedModel
    from pipeline.workspace import Workspace

Message = dict[str, str]
MAX_ROWS = 4
_ROW = re.compile(r"^(?:L(?P<layer>\d+)(?::?E(?P<epoch>\d+))?[:@])?(?P<mult>[-+]?\d*\.?\d+(?:e[-+]?\d+)?)$", re.I)


@dataclass(frozen=True)
class RowSpec:
    """One side-by-side column: a multiplier on the vector of (layer, epoch)."""

    multiplier: float
    layer: int
    epoch: int

    @property
    def label(self) -> str:
        return f"L{self.layer} E{self.epoch} ×{self.multiplier:+g}"


def parse_rows(text: str, layer: int, epoch: int) -> list[RowSpec]:
    """`"1.5"`, `"-1, 0, 1"` or `"1, L2:E1:1.5"` → row specs (bare numbers use `layer`/`epoch`)."""
    rows = []
    for part in (p.strip() for p in re.split(r"[,\s]+", text.strip())):
        if not part:
            continue
        match = _ROW.match(part)
        if match is None:
            raise InputError(f"multiplier {part!r}: use a number, or L<layer>:E<epoch>:<number> for another vector")
        rows.append(
            RowSpec(
                float(match["mult"]),
                int(match["layer"]) if match["layer"] else layer,
                int(match["epoch"]) if match["epoch"] else epoch,
            )
        )
    if not 1 <= len(rows) <= MAX_ROWS:
        raise InputError(f"give 1 to {MAX_ROWS} multipliers, got {len(rows)}")
    return rows


@dataclass(frozen=True)
class Decoding:
    """Sampling settings for chat turns (defaults from the config's `[generate]`)."""

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 0
    greedy: bool = False
    seed: int = 0

    @classmethod
    def from_config(cls, config: Config, *, max_new_tokens: int | None = None, greedy: bool | None = None) -> Decoding:
        gen = config.generate
        return cls(
            max_new_tokens=max_new_tokens or max(gen.max_new_tokens, 200),
            temperature=gen.temperature,
            top_p=gen.top_p,
            top_k=gen.top_k,
            greedy=gen.greedy if greedy is None else greedy,
            seed=gen.seed,
        )


@dataclass
class Step:
    """New text and new token per row after one decode step (None once a row has finished)."""

    texts: list[str]
    tokens: list[int | None]


class ChatSession:
    """A loaded model plus the vectors its rows steer with."""

    def __init__(self, loaded: LoadedModel, *, system_prompt: str = "", decoding: Decoding | None = None) -> None:
        self.loaded = loaded
        self.system_prompt = system_prompt
        self.decoding = decoding or Decoding()
        self.vectors: dict[tuple[int, int], torch.Tensor] = {}
        self.vector_source: Callable[[int, int], torch.Tensor] | None = None

    @classmethod
    def open(
        cls,
        ws: Workspace,
        config: Config,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        decoding: Decoding | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> ChatSession:
        """Load `model` (imports torch here, not before) and read vectors from the workspace on demand."""
        say = on_stage or (lambda text: None)
        say("importing torch and transformers")
        from pipeline.models import load_model

        say(f"loading {model}")
        loaded = load_model(model, device=device, dtype=dtype)
        session = cls(loaded, system_prompt=config.system_prompt, decoding=decoding or Decoding.from_config(config))
        session.vector_source = lambda layer, epoch: _read_vector(ws, config, model, layer, epoch, loaded.hidden_size)
        return session

    def add_vector(self, layer: int, epoch: int, vector: torch.Tensor) -> None:
        self.vectors[(layer, epoch)] = vector

    def vector(self, layer: int, epoch: int) -> torch.Tensor:
        """The vector for (layer, epoch), loading it from the workspace the first time."""
        key = (layer, epoch)
        if key not in self.vectors:
            if self.vector_source is None:
                raise InputError(f"no vector for layer {layer} epoch {epoch}")
            self.vectors[key] = self.vector_source(layer, epoch)
        return self.vectors[key]

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        from pipeline.chat import encode_prompt, render_prompt

        text = render_prompt(self.loaded.tokenizer, messages, system_prompt=self.system_prompt)
        return encode_prompt(self.loaded.tokenizer, text)

    def stream(
        self,
        conversations: Sequence[Sequence[Message]],
        rows: Sequence[RowSpec],
        *,
        turn: int = 0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[Step]:
        """Decode one reply per conversation, all rows in one batch; yields each step's new text per row."""
        if len(conversations) != len(rows):
            raise ValueError(f"{len(conversations)} conversations for {len(rows)} rows")
        from pipeline.chat import stop_token_ids

        tok = self.loaded.tokenizer
        stops = tuple(stop_token_ids(tok))
        prompts = [self.prompt_ids(conv) for conv in conversations]
        with self._hooks(rows):
            yield from _decode(self.loaded.model, prompts, rows, self.decoding, stops, tok, turn, should_stop)

    def reply(self, conversations: Sequence[Sequence[Message]], rows: Sequence[RowSpec], *, turn: int = 0) -> list[str]:
        """The whole reply of every row (`stream` joined)."""
        texts = [""] * len(rows)
        for step in self.stream(conversations, rows, turn=turn):
            texts = [a + b for a, b in zip(texts, step.texts, strict=True)]
        return texts

    def _hooks(self, rows: Sequence[RowSpec]) -> Any:
        from contextlib import ExitStack

        from pipeline.steering import steer

        stack = ExitStack()
        keys = sorted({(r.layer, r.epoch) for r in rows if r.multiplier != 0.0})
        for layer, epoch in keys:
            mults = [r.multiplier if (r.layer, r.epoch) == (layer, epoch) else 0.0 for r in rows]
            stack.enter_context(steer(self.loaded.model, layer, self.vector(layer, epoch), mults))
        return stack


def _read_vector(ws: Workspace, config: Config, model: str, layer: int, epoch: int, hidden: int) -> torch.Tensor:
    from pipeline.vectors import load_vector

    return load_vector(ws.vector_path(config.behavior, model, layer, epoch), hidden_size=hidden)


def _decode(
    model: Any,
    prompts: list[list[int]],
    rows: Sequence[RowSpec],
    decoding: Decoding,
    stops: tuple[int, ...],
    tokenizer: Any,
    turn: int,
    should_stop: Callable[[], bool],
) -> Iterator[Step]:
    """Greedy or seeded sampling with a KV cache over a left-padded batch (positions as HF `generate`)."""
    import torch
    from transformers import DynamicCache

    from pipeline.generate_sampling import Sampling, choose_tokens, row_seed, row_uniforms
    from pipeline.models import cache_kwarg

    device = next(model.parameters()).device
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0])
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    sampling = Sampling(decoding.max_new_tokens, decoding.temperature, decoding.top_p, decoding.top_k, decoding.greedy)
    uniforms = row_uniforms(
        [row_seed(decoding.seed, turn, r.multiplier) for r in rows], decoding.max_new_tokens, device
    )
    stop_t = torch.tensor(stops, device=device)
    decoders = [_TextStream(tokenizer) for _ in rows]
    finished = torch.zeros(len(rows), dtype=torch.bool, device=device)
    cache = DynamicCache(config=model.config)
    kv = {cache_kwarg(model): cache}
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **kv).logits[:, -1]
        for step in range(decoding.max_new_tokens):
            nxt = choose_tokens(logits.float(), uniforms[:, step], sampling).masked_fill(finished, pad)
            new = [None if done else int(t) for t, done in zip(nxt.tolist(), finished.tolist(), strict=True)]
            finished |= torch.isin(nxt, stop_t)
            last = bool(finished.all()) or step + 1 == decoding.max_new_tokens or should_stop()
            yield Step([d.push(t, t in stops, last) for d, t in zip(decoders, new, strict=True)], new)
            if last:
                return
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, **kv)
            logits = out.logits[:, -1]


@dataclass
class _TextStream:
    """Incremental detokenisation: emit only text that later tokens cannot change (no dangling UTF-8)."""

    tokenizer: Any
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    done: bool = False

    def push(self, token: int | None, is_stop: bool, last: bool) -> str:
        if token is not None and not is_stop:
            self.tokens.append(token)
        if self.done:
            return ""
        self.done = token is None or is_stop or last
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd") and not self.done:
            return ""
        new = text[len(self.sent) :] if text.startswith(self.sent) else ""
        self.sent = text if text.startswith(self.sent) else self.sent
        return new


@dataclass
class Conversation:
    """Per-row histories of a side-by-side chat, plus a transcript that records multiplier changes."""

    rows: list[RowSpec]
    histories: list[list[Message]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0

    def __post_init__(self) -> None:
        if not self.histories:
            self.histories = [[] for _ in self.rows]

    def set_rows(self, rows: list[RowSpec]) -> bool:
        """Change the rows' steering between turns; a different column count starts over (returns True)."""
        if len(rows) != len(self.rows):
            self.rows = rows
            self.reset()
            return True
        if rows != self.rows:
            self.log.append({"event": "steering", "rows": [r.label for r in rows]})
        self.rows = rows
        return False

    def reset(self) -> None:
        self.histories = [[] for _ in self.rows]
        self.log = []
        self.turns = 0

    def ask(self, text: str) -> list[list[Message]]:
        """Add the user's message to every row; returns what each row sends to the model."""
        for history in self.histories:
            history.append({"role": "user", "content": text})
        self.log.append({"event": "user", "text": text})
        return [list(h) for h in self.histories]

    def answer(self, replies: Sequence[str]) -> None:
        for history, reply, row in zip(self.histories, replies, self.rows, strict=True):
            history.append({"role": "assistant", "content": reply})
            self.log.append({"event": "assistant", "row": row.label, "text": reply})
        self.turns += 1

    def transcript(self, header: str = "") -> str:
        """Plain text: one block per message, each reply labelled with its steering."""
        lines = [header, ""] if header else []
        for entry in self.log:
            if entry["event"] == "user":
                lines += [f"user: {entry['text']}", ""]
            elif entry["event"] == "assistant":
                lines += [f"assistant [{entry['row']}]: {entry['text']}", ""]
            else:
                lines += [f"-- steering now {', '.join(entry['rows'])} --", ""]
        return "\n".join(lines).rstrip() + "\n"

    def save(self, path: Path, header: str = "") -> Path:
        """Write the transcript (`.json`: the structured log; anything else: plain text)."""
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":
            data = {"header": header, "rows": [r.label for r in self.rows], "log": self.log}
            path.write_text(json.dumps(data, indent=2) + "\n")
        else:
            path.write_text(self.transcript(header))
        return path
