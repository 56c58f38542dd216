"""The decode loop of the generation engine: fixed buffers, one step function, CUDA-graph replay on GPUs.

Everything a step reads or writes lives in `DecodeBuffers`, allocated once per batch, and the step
number is a device tensor, so a step is the same kernels over the same addresses every time. On CUDA
step 0 runs eagerly (it compiles and warms every kernel), step 1 is captured into a CUDA graph, and
the rest replay it: one launch per step instead of thousands of kernels issued from Python. The CPU
runs the same step function eagerly, so the equivalence tests cover its arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.generate_model import SlotCache, Stack
from pipeline.generate_sampling import Sampling, choose_tokens

FINISH_CHECK_EVERY = 8  # decode steps between "all rows finished?" checks (each one is a GPU sync)


@dataclass
class DecodeBuffers:
    """The decode state of one batch; rows are in batch order."""

    raw: torch.Tensor  # (rows, vocab) next-token logits in the model dtype
    step: torch.Tensor  # (1,) long: the step whose token is chosen next
    lengths: torch.Tensor  # (rows,) long: prompt lengths, the position of the first new token
    start: torch.Tensor  # (rows,) int32: each row's first valid cache slot
    first_slot: int  # cache slot of the first new token (the batch's longest prompt length)
    uniforms: torch.Tensor  # (rows, steps) the rows' own sampling draws
    delta: torch.Tensor  # (rows, H) steering added after the steering layer
    stop: torch.Tensor  # (k,) stop token ids
    tokens: torch.Tensor  # (rows, steps) long
    lps: torch.Tensor  # (rows, steps) fp32 log-probs under the unwarped distribution
    finished: torch.Tensor  # (rows,) bool: a stop token was chosen

    @classmethod
    def create(
        cls, raw: torch.Tensor, lengths: list[int], uniforms: torch.Tensor, delta: torch.Tensor, sampling: Sampling
    ) -> DecodeBuffers:
        dev, n, steps = raw.device, raw.shape[0], sampling.max_new_tokens
        first = max(lengths)
        length_t = torch.tensor(lengths, dtype=torch.long)
        return cls(
            raw=raw,
            step=torch.zeros(1, dtype=torch.long, device=dev),
            lengths=length_t.to(dev),
            start=(first - length_t).to(device=dev, dtype=torch.int32),
            first_slot=first,
            uniforms=uniforms,
            delta=delta.to(dev),
            stop=torch.tensor(sampling.stop_ids, dtype=torch.long, device=dev),
            tokens=torch.zeros(n, steps, dtype=torch.long, device=dev),
            lps=torch.zeros(n, steps, device=dev),
            finished=torch.zeros(n, dtype=torch.bool, device=dev),
        )


def choose(buf: DecodeBuffers, sampling: Sampling) -> torch.Tensor:
    """Pick every row's token for the current step from `buf.raw` and record it and its log-prob."""
    logits = buf.raw.float()
    tok = choose_tokens(logits, buf.uniforms.index_select(1, buf.step)[:, 0], sampling, keys=buf.raw)
    lp = logits.gather(-1, tok[:, None]) - logits.logsumexp(-1, keepdim=True)
    buf.tokens.index_copy_(1, buf.step, tok[:, None])
    buf.lps.index_copy_(1, buf.step, lp)
    if buf.stop.numel():
        buf.finished |= torch.isin(tok, buf.stop)
    return tok


def step(stack: Stack, layer: int, cache: SlotCache, buf: DecodeBuffers, sampling: Sampling) -> None:
    """Choose this step's tokens, feed them through the model, leave the next logits in `buf.raw`."""
    tok = choose(buf, sampling)
    slot = buf.step + buf.first_slot
    bounds = (buf.start, (slot + 1).to(torch.int32).reshape(()))
    pos = (buf.lengths + buf.step)[:, None]
    cache.decode(slot)
    hidden = stack.embed_ids(tok[:, None])
    rope = stack.rope(hidden, pos)
    cut = layer + 1
    hidden = stack.run(hidden, 0, cut, mask=None, positions=pos, cache=cache, rope=rope, decode=bounds)
    hidden = hidden + buf.delta[:, None, :].to(hidden.device)
    hidden = stack.run(hidden, cut, stack.num_layers, mask=None, positions=pos, cache=cache, rope=rope, decode=bounds)
    buf.raw.copy_(stack.raw_logits(hidden[:, -1]))
    buf.step += 1


def decode(stack: Stack, layer: int, cache: SlotCache, buf: DecodeBuffers, sampling: Sampling, *, graphs: bool) -> int:
    """Run up to `sampling.max_new_tokens` steps; returns how many tokens each row has in `buf.tokens`."""
    steps = sampling.max_new_tokens
    run: Callable[[], None] = lambda: step(stack, layer, cache, buf, sampling)  # noqa: E731
    graphs = graphs and buf.raw.is_cuda
    stream = torch.cuda.Stream(buf.raw.device) if graphs else None
    graph: torch.cuda.CUDAGraph | None = None
    done = 0
    for t in range(steps):
        if t == steps - 1:  # the last token needs no forward pass after it
            choose(buf, sampling)
        elif stream is None:
            run()
        elif t == 0:
            _on_side_stream(stream, run)  # warms every kernel before the capture
        else:
            if graph is None:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    run()
            graph.replay()
        done = t + 1
        if buf.stop.numel() and done % FINISH_CHECK_EVERY == 0 and bool(buf.finished.all()):
            break
    return done


def _on_side_stream(stream: torch.cuda.Stream, fn: Callable[[], None]) -> None:
    current = torch.cuda.current_stream(stream.device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        fn()
    current.wait_stream(stream)
