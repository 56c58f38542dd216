"""`steertui chat --model M --layer L --epoch E [--multiplier X ...]`: a plain REPL with the steered model.

Several `--multiplier`s answer side by side (one batch, one model). Commands: `/mult 1.5` (or `/mult -1 0 1`),
`/reset`, `/save FILE`, `/quit`. Reads stdin, writes stdout; nothing listens on a network port.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.errors import InputError
from steertui.cli.common import add_parser, load, workspace

ORDER = 45
HELP = "commands: /mult X [Y ...]  /reset  /save FILE  /quit"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "chat", "chat with the steered model in the terminal (side by side with several -m)")
    p.add_argument("--model", required=True, help="model name from steertui.toml, hub id, directory or alias")
    p.add_argument("--layer", type=int, required=True, help="the vector's layer")
    p.add_argument("--epoch", type=int, required=True, help="the vector's epoch")
    p.add_argument("--multiplier", "-m", type=float, action="append", default=None,
                   help="steering multiplier; repeat for side-by-side replies (default 1.0)")  # fmt: skip
    p.add_argument("--max-new-tokens", type=int, default=None, help="reply length (default: max(200, config))")
    p.add_argument("--greedy", action="store_true", default=None, help="greedy decoding instead of sampling")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.chat_session import ChatSession, Conversation, Decoding, RowSpec

    config = load(args)
    ws = workspace(args)
    mults = args.multiplier or [1.0]
    if len(mults) > 4:
        raise InputError("--multiplier: at most 4 side by side")
    rows = [RowSpec(m, args.layer, args.epoch) for m in mults]
    decoding = Decoding.from_config(config, max_new_tokens=args.max_new_tokens, greedy=args.greedy)
    session = ChatSession.open(ws, config, args.model, device=args.device, decoding=decoding, on_stage=_stage)
    for row in rows:
        if row.multiplier:
            session.vector(row.layer, row.epoch)  # fail now, not at the first message
    print(f"{args.model} · {', '.join(r.label for r in rows)} · {HELP}", file=sys.stderr, flush=True)
    return repl(session, Conversation(rows), header=f"model {args.model}")


def _stage(text: str) -> None:
    print(f"[{text}]", file=sys.stderr, flush=True)


def repl(session: Any, conv: Any, *, header: str = "") -> int:
    """Read lines until EOF or /quit; each line is a turn for every row."""
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            if command(line, session, conv, header):
                return 0
            continue
        sent = conv.ask(line)
        conv.answer(_turn(session, conv, sent))


def _turn(session: Any, conv: Any, sent: list[Any]) -> list[str]:
    rows = conv.rows
    if len(rows) == 1:
        print(f"{rows[0].label}> ", end="", flush=True)
        text = ""
        for step in session.stream(sent, rows, turn=conv.turns):
            print(step.texts[0], end="", flush=True)
            text += step.texts[0]
        print()
        return [text]
    replies = session.reply(sent, rows, turn=conv.turns)
    for row, reply in zip(rows, replies, strict=True):
        print(f"{row.label}> {reply}")
    return list(replies)


def command(line: str, session: Any, conv: Any, header: str) -> bool:
    """Run a /command; True means quit."""
    from pathlib import Path

    from pipeline.chat_session import RowSpec

    name, _, rest = line.partition(" ")
    if name in ("/quit", "/exit", "/q"):
        return True
    if name == "/reset":
        conv.reset()
        print("(conversation cleared)")
    elif name == "/save" and rest.strip():
        print(f"(saved {conv.save(Path(rest.strip()), header)})")
    elif name == "/mult" and rest.strip():
        try:
            mults = [float(x) for x in rest.replace(",", " ").split()]
        except ValueError:
            print(f"(not a number: {rest.strip()}; {HELP})")
            return False
        base = conv.rows[0]
        if conv.set_rows([RowSpec(m, base.layer, base.epoch) for m in mults[:4]]):
            print("(a different number of columns: conversation cleared)")
        print(f"(now {', '.join(r.label for r in conv.rows)})")
    else:
        print(f"({HELP})")
    return False
