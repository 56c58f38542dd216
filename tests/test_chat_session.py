"""The chat session's streaming decoder (tiny-random): streamed text equals HF `generate`, row by row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.chat_session import ChatSession, Conversation, Decoding, RowSpec, parse_rows
from pipeline.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CONVERSATIONS = [
    [{"role": "user", "content": "Hello there, how are you?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Tell me about your day, in detail please."}],
]


@pytest.fixture(scope="module")
def vector(tiny: Any) -> Any:
    import torch

    torch.manual_seed(1)
    return torch.randn(tiny.hidden_size) * 4.0


def _session(tiny: Any, vector: Any, **kw: Any) -> ChatSession:
    session = ChatSession(tiny, system_prompt="You are a conversational assistant.", decoding=Decoding(**kw))
    session.add_vector(1, 2, vector)
    return session


def _hf_generate(session: ChatSession, rows: list[RowSpec], vector: Any, max_new: int) -> list[list[int]]:
    """HF `generate` on the same left-padded batch, steered by the same per-row multipliers."""
    import torch

    from pipeline.chat import stop_token_ids
    from pipeline.steering import steer

    tok = session.loaded.tokenizer
    prompts = [session.prompt_ids(c) for c in CONVERSATIONS]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    stops = stop_token_ids(tok)
    with steer(session.loaded.model, 1, vector, [r.multiplier for r in rows]), torch.inference_mode():
        out = session.loaded.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
            eos_token_id=stops, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
    result = []
    for row in out[:, width:].tolist():
        kept = []
        for t in row:
            kept.append(t)
            if t in stops:
                break
        result.append(kept)
    return result


def test_streamed_greedy_equals_generate_for_every_row(tiny: Any, vector: Any) -> None:
    rows = [RowSpec(0.0, 1, 2), RowSpec(2.0, 1, 2), RowSpec(-3.0, 1, 2)]
    session = _session(tiny, vector, max_new_tokens=24, greedy=True)
    steps = list(session.stream(CONVERSATIONS, rows))
    streamed = [[s.tokens[i] for s in steps if s.tokens[i] is not None] for i in range(len(rows))]
    expected = _hf_generate(session, rows, vector, 24)
    assert streamed == expected
    tok = tiny.tokenizer
    for i, tokens in enumerate(streamed):
        text = "".join(s.texts[i] for s in steps)
        assert text == tok.decode([t for t in tokens if t not in (tok.eos_token_id,)], skip_special_tokens=True)
    assert len({tuple(t) for t in streamed}) > 1, "steering should change at least one row"


def test_sampling_is_seeded_and_batch_independent(tiny: Any, vector: Any) -> None:
    rows = [RowSpec(1.0, 1, 2), RowSpec(-1.0, 1, 2)]
    session = _session(tiny, vector, max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first = session.reply(CONVERSATIONS[:2], rows, turn=3)
    again = session.reply(CONVERSATIONS[:2], rows, turn=3)
    alone = session.reply(CONVERSATIONS[:1], rows[:1], turn=3)
    assert first == again
    assert alone[0] == first[0]


def test_two_vectors_side_by_side_from_one_model(tiny: Any, vector: Any) -> None:
    session = _session(tiny, vector, max_new_tokens=10, greedy=True)
    session.add_vector(2, 2, -vector)
    mixed = session.reply(CONVERSATIONS[:2], [RowSpec(2.0, 1, 2), RowSpec(2.0, 2, 2)])
    first = session.reply(CONVERSATIONS[:1], [RowSpec(2.0, 1, 2)])
    second = session.reply(CONVERSATIONS[1:2], [RowSpec(2.0, 2, 2)])
    assert mixed == [first[0], second[0]]


def test_stop_request_ends_the_stream_early(tiny: Any, vector: Any) -> None:
    session = _session(tiny, vector, max_new_tokens=50, greedy=True)
    steps = list(session.stream(CONVERSATIONS[:1], [RowSpec(0.0, 1, 2)], should_stop=lambda: True))
    assert len(steps) == 1


def test_parse_rows() -> None:
    assert parse_rows("1.5", 3, 2) == [RowSpec(1.5, 3, 2)]
    assert parse_rows("-1, 0 +2", 3, 2) == [RowSpec(-1.0, 3, 2), RowSpec(0.0, 3, 2), RowSpec(2.0, 3, 2)]
    assert parse_rows("1, L5:E1:1.5", 3, 2)[1] == RowSpec(1.5, 5, 1)
    assert parse_rows("L4@-2", 3, 2) == [RowSpec(-2.0, 4, 2)]
    for bad in ("", "abc", "1,2,3,4,5"):
        with pytest.raises(InputError):
            parse_rows(bad, 1, 1)


def test_conversation_histories_transcript_and_save(tmp_path: Path) -> None:
    conv = Conversation([RowSpec(1.0, 1, 2), RowSpec(-1.0, 1, 2)])
    sent = conv.ask("hi")
    assert sent == [[{"role": "user", "content": "hi"}]] * 2
    conv.answer(["hello", "go away"])
    assert conv.set_rows([RowSpec(2.0, 1, 2), RowSpec(-1.0, 1, 2)]) is False
    conv.ask("again")
    conv.answer(["HELLO", "no"])
    assert conv.histories[0][-1] == {"role": "assistant", "content": "HELLO"}
    text = conv.transcript("model tiny-random")
    assert "assistant [L1 E2 ×+1]: hello" in text and "-- steering now L1 E2 ×+2, L1 E2 ×-1 --" in text
    path = conv.save(tmp_path / "chat.txt", "model tiny-random")
    assert path.read_text() == text
    assert '"event": "assistant"' in conv.save(tmp_path / "chat.json").read_text()
    assert conv.set_rows([RowSpec(1.0, 1, 2)]) is True
    assert conv.histories == [[]] and conv.turns == 0


def test_session_reads_vectors_from_the_workspace(workspace: Path, tiny: Any, vector: Any) -> None:
    from pipeline.config_load import load_config
    from pipeline.vectors import VectorMeta, save_vector
    from pipeline.workspace import Workspace

    ws = Workspace(workspace)
    config = load_config(workspace)
    path = ws.vector_path(config.behavior, "tiny-random", 1, 2)
    save_vector(path, vector, VectorMeta("tiny-random", 1, 2, tiny.hidden_size, float(vector.norm())))
    session = ChatSession.open(
        ws, config, "tiny-random", device="cpu", decoding=Decoding(max_new_tokens=4, greedy=True)
    )
    replies = session.reply(CONVERSATIONS[:1], [RowSpec(1.0, 1, 2)])
    assert len(replies) == 1
    with pytest.raises(Exception, match="vector file not found"):
        session.vector(2, 2)


def test_chat_repl_streams_changes_multiplier_saves_and_quits(
    workspace: Path, tiny: Any, vector: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from pipeline.config_load import load_config
    from pipeline.vectors import VectorMeta, save_vector
    from pipeline.workspace import Workspace
    from steertui.cli import main

    config = load_config(workspace)
    path = Workspace(workspace).vector_path(config.behavior, "tiny-random", 1, 2)
    save_vector(path, vector, VectorMeta("tiny-random", 1, 2, tiny.hidden_size, float(vector.norm())))
    saved = workspace / "out" / "chat.txt"
    script = f"hello\n/mult 2\nagain\n/mult -1 1\nside by side\n/save {saved}\n/bogus\n/quit\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    argv = ["-w", str(workspace), "chat", "--model", "tiny-random", "--layer", "1", "--epoch", "2", "--greedy",
            "--max-new-tokens", "5", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    first, rest = out.split("(now L1 E2 ×+2)", 1)
    assert "L1 E2 ×+1> " in first and "L1 E2 ×+2> " in rest
    assert "(a different number of columns: conversation cleared)" in rest
    assert "L1 E2 ×-1> " in rest and "commands: /mult" in rest  # /bogus shows the help
    text = saved.read_text()
    assert text.startswith("model tiny-random") and "user: side by side" in text and "assistant [L1 E2 ×-1]" in text


def test_chat_repl_refuses_a_missing_vector(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steertui.cli import main

    argv = ["-w", str(workspace), "chat", "--model", "tiny-random", "--layer", "1", "--epoch", "2", "--device", "cpu"]
    assert main(argv) == 2
    assert "vector file not found" in capsys.readouterr().err
