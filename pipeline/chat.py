"""Render conversations to model text through the tokenizer's chat template.

Two prompt formats (SPEC §4.1):
- "chat": the template with the assistant header (`add_generation_prompt=True`), as generation uses;
- "seed": the study's training format, header-less (`add_generation_prompt=False`), for exact replication.
Llama-3 templates inject a "Cutting Knowledge Date / Today Date" block; it is removed whatever the date,
so rendered prompts do not change from day to day.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

PromptFormat = Literal["chat", "seed"]

_DATE_BLOCK = re.compile(r"\n\nCutting Knowledge Date: [^\n]*\nToday Date: [^\n]*(\n\n)?")


def with_system(system_prompt: str, messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Prepend the system prompt unless the conversation already has one."""
    msgs = list(messages)
    if system_prompt and not (msgs and msgs[0]["role"] == "system"):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def render_prompt(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    system_prompt: str = "",
    prompt_format: PromptFormat = "chat",
) -> str:
    """Prompt text ready for `tokenizer(text, add_special_tokens=False)`."""
    text = tokenizer.apply_chat_template(
        with_system(system_prompt, messages),
        tokenize=False,
        add_generation_prompt=prompt_format == "chat",
    )
    return strip_date_block(str(text))


def strip_date_block(text: str) -> str:
    def _keep_sep(match: re.Match[str]) -> str:
        return "\n\n" if match.group(1) else ""

    return _DATE_BLOCK.sub(_keep_sep, text)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered prompt text (the template already holds BOS)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Token ids of an assistant reply followed by the end-of-turn token, as training scores it."""
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    return [*ids, end_of_turn_id(tokenizer)]


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn (Llama-3: <|eot_id|>, ChatML: <|im_end|>)."""
    for name in ("<|eot_id|>", "<|im_end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            return tid
    eos = tokenizer.eos_token_id
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None:
        raise ValueError("tokenizer has no end-of-turn or EOS token")
    return int(eos)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end generation: end-of-turn plus the tokenizer's EOS."""
    ids = {end_of_turn_id(tokenizer)}
    eos = tokenizer.eos_token_id
    for tid in eos if isinstance(eos, list) else [eos]:
        if tid is not None:
            ids.add(int(tid))
    return sorted(ids)
