"""The batched steered-generation engine: many (prompt, multiplier) rows per batch, all metrics batched.

One `GenerationEngine.generate` call runs one batch (rows may mix prompts and multipliers):
1. Prefill, in token-budgeted chunks of prompts: each sequence is [prompt | chosen | rejected] with a
   tree mask (the two replies see the prompt, not each other), so one pass gives the first-token
   logits and the prompt-conditioned log-probs of the test row's chosen and rejected replies. Layers
   0..L (the steering layer) run once per prompt; their output is copied to each of the prompt's rows,
   `m_i * v` is added, and layers L+1.. run per row. The prompts' K/V go into one preallocated
   `SlotCache`, right-aligned at the same slot (the replies' K/V are used within the pass only).
2. Decode (`generate_decode`): one token per row per step for all rows at once, seeded per row
   (`generate_sampling`), recording each token's log-prob under the model's own (unwarped)
   distribution; on CUDA the step is replayed as a CUDA graph.
3. Score without the prompt (the study's metrics), in one pass: the reply alone, and BOS +
   chosen/rejected alone (those again once per prompt below the steering layer).
The engine is tokenizer-free (token ids in, token ids and floats out) so the benchmark can drive it
with synthetic prompts; `pipeline.generate` does tokenisation, resume and files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.generate_decode import DecodeBuffers, decode
from pipeline.generate_fused import fused_layers, fused_logprobs
from pipeline.generate_model import SlotCache, Stack, check_stack, doc_mask, engine_attention, target_logprobs
from pipeline.generate_sampling import Sampling, row_uniforms
from pipeline.steering import Steering

# row-tokens per prefill/score chunk on CUDA: a few prompts' rows at a time. Study-shaped prompts
# pad 7.5% at 16384 (20% at 32768, 1% at 8192, where the layers below L run on too few tokens);
# on an H200 (8B shape, 24 x 21 rows) 16384 gave 14.3 ms/reply, 8192 14.7-15.4, 32768 14.6-15.3
CHUNK_TOKENS_CUDA = 16384
LOGIT_BYTES_PER_ROW = 40  # bytes per vocab entry per row for decode logits, softmax, sort and CDF buffers


@dataclass(frozen=True)
class PromptInput:
    """Token ids for one test prompt."""

    prompt: tuple[int, ...]  # rendered chat prompt, ending with the assistant header
    chosen: tuple[int, ...]  # chosen reply + end-of-turn, scored after the prompt
    rejected: tuple[int, ...]  # rejected reply + end-of-turn, scored after the prompt
    chosen_alone: tuple[int, ...]  # BOS + chosen reply, scored without any prompt (the study's)
    rejected_alone: tuple[int, ...]


@dataclass(frozen=True)
class RowInput:
    prompt: int  # index into the prompts passed with it
    multiplier: float
    seed: int  # the row's own sampling seed (`generate_sampling.row_seed`)


@dataclass
class RowOutput:
    """Tokens and mean log-probs (natural log, per token) of one row; None where no token is scored."""

    tokens: list[int]  # new tokens, ending with the stop token when one was produced
    logprob: float | None  # reply alone: mean log p(r_t | r_<t), t >= 2 (1-based)
    logprob_cond: float  # reply given the prompt: mean log p(r_t | prompt, r_<t) over all t
    chosen: float | None  # BOS + chosen alone: mean over tokens 2..n
    rejected: float | None
    chosen_cond: float  # chosen + end-of-turn given the prompt: mean over all its tokens
    rejected_cond: float


@dataclass
class PhaseTimes:
    """Wall seconds per phase (GPU-synchronised at phase ends), summed over batches."""

    prefill: float = 0.0
    decode: float = 0.0
    score: float = 0.0
    rows: int = 0
    steps: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"prefill_s": self.prefill, "decode_s": self.decode, "score_s": self.score, "rows": self.rows}


@dataclass
class _Chunk:
    """Padded token block for a group of unique sequences, and the rows that use each of them."""

    ids: torch.Tensor  # (U, T)
    mask: torch.Tensor  # (U, 1, T, T)
    pos: torch.Tensor  # (U, T)
    expand: torch.Tensor  # (rows,) -> index into U
    rows: slice  # the rows of the batch this chunk covers
    pm: int = 0  # prompt width (prompt layouts only)
    plan: list[tuple[list[int], list[int], list[int]]] = field(default_factory=list)  # (positions, targets, kind)


class GenerationEngine:
    """Steered batched generation for one (model, layer, vector)."""

    def __init__(
        self,
        model: Any,
        layer: int,
        vector: torch.Tensor,
        *,
        pad_id: int,
        chunk_tokens: int = 0,
        check: bool = True,
        fast: bool = True,
    ) -> None:
        """`fast` (one CUDA device): fused norm/rotary/activation/log-prob kernels, CUDA-graph decode steps."""
        Steering(model, layer, vector)  # validates the layer index and the vector size (VectorError)
        self.stack = Stack(model)
        self.layer = layer
        self.vector = vector.detach().to(torch.float32)
        self.pad_id = pad_id
        self.dtype = self.stack.embed.weight.dtype
        self.chunk_tokens = chunk_tokens or (CHUNK_TOKENS_CUDA if self.stack.device.type == "cuda" else 4096)
        self.times = PhaseTimes()
        # one CUDA device only: a graph is captured on one device's stream
        self.fast = fast and self.stack.device.type == "cuda" and len(self._layers_per_device()) == 1
        if check:
            check_stack(self.stack, pad_id)
            if self.fast:  # the fused kernels must reproduce the model's own forward too
                with fused_layers(model):
                    check_stack(self.stack, pad_id)
        if self.fast:
            self._warm_up()

    def generate(self, prompts: Sequence[PromptInput], rows: Sequence[RowInput], sampling: Sampling) -> list[RowOutput]:
        """Generate and score every row; outputs follow the order of `rows`."""
        # longest prompts first, each prompt's rows together: chunks then pad little
        order = sorted(range(len(rows)), key=lambda i: (-len(prompts[rows[i].prompt].prompt), rows[i].prompt))
        self.stack.logprob_fn = fused_logprobs() if self.fast else target_logprobs
        with torch.inference_mode(), engine_attention(self.stack.model), fused_layers(self.stack.model, self.fast):
            outs = self._batch(prompts, [rows[i] for i in order], sampling)
        result: list[RowOutput | None] = [None] * len(rows)
        for slot, i in enumerate(order):
            result[i] = outs[slot]
        return [r for r in result if r is not None]

    def _warm_up(self) -> None:
        """Run two tiny batches, so every shape class the fused kernels are compiled for (one prompt,
        one row, several of each, decode steps) is compiled here rather than inside the first real batch."""
        vocab = int(self.stack.head.weight.shape[0])

        def ids(k: int, seed: int) -> tuple[int, ...]:
            return tuple((seed + 7 * i) % (vocab - 1) + 1 for i in range(k))

        one = PromptInput(ids(9, 3), ids(3, 5), ids(2, 11), ids(4, 13), ids(3, 17))
        two = PromptInput(ids(5, 19), ids(2, 23), ids(3, 29), ids(3, 31), ids(4, 37))
        sampling = Sampling(max_new_tokens=3)
        self.generate([one], [RowInput(0, 1.0, 0)], sampling)
        self.generate([one, two], [RowInput(0, -1.0, 1), RowInput(1, 0.0, 2), RowInput(1, 1.0, 3)], sampling)
        self.times = PhaseTimes()

    def cache_slots(self, prompts: Sequence[PromptInput], sampling: Sampling) -> int:
        """Cache length a batch of these prompts needs."""
        return max(len(p.prompt) for p in prompts) + sampling.max_new_tokens

    def max_rows(self, slots: int, cap: int = 1024) -> int:
        """Rows whose cache and decode buffers fit in free accelerator memory (CPU: a fixed 64)."""
        if self.stack.device.type != "cuda":
            return 64
        config = getattr(self.stack.model.config, "text_config", self.stack.model.config)
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        per_layer = 2 * kv_heads * head_dim * slots * self.dtype.itemsize
        act = self.chunk_tokens * (6 * config.hidden_size + 3 * config.intermediate_size) * self.dtype.itemsize
        fits = cap
        for dev, n_layers in self._layers_per_device().items():
            free, _ = torch.cuda.mem_get_info(dev)
            per_row = n_layers * per_layer + LOGIT_BYTES_PER_ROW * int(config.vocab_size)
            fits = min(fits, int((free * 0.9 - act) // per_row))
        return max(1, fits)

    def _layers_per_device(self) -> dict[torch.device, int]:
        out: dict[torch.device, int] = {}
        for layer in self.stack.layers:
            dev = next(layer.parameters()).device
            out[dev] = out.get(dev, 0) + 1
        return out

    # -- one batch ---------------------------------------------------------------------------------

    def _batch(self, prompts: Sequence[PromptInput], rows: list[RowInput], sampling: Sampling) -> list[RowOutput]:
        uniq = list(dict.fromkeys(r.prompt for r in rows))
        local = {p: j for j, p in enumerate(uniq)}
        ps = [prompts[p] for p in uniq]
        row_u = [local[r.prompt] for r in rows]
        mults = torch.tensor([r.multiplier for r in rows], dtype=torch.float32)
        delta = self._delta(mults)
        start = self._tick()
        slots = self.cache_slots(ps, sampling)
        cache = SlotCache(len(rows), slots)
        first, chosen_c, rejected_c = self._prefill(ps, row_u, delta, cache)
        self.times.prefill += self._tick() - start
        start = self._tick()
        tokens, lps = self._decode(ps, row_u, rows, first, delta, cache, sampling)
        self.times.decode += self._tick() - start
        start = self._tick()
        replies = [_cut(tokens[i], sampling.stop_ids) for i in range(len(rows))]
        n, k = len(rows), len(ps)
        # one scoring pass for the replies alone and BOS + chosen / rejected alone
        docs = [list(r) for r in replies] + [list(p.chosen_alone) for p in ps] + [list(p.rejected_alone) for p in ps]
        row_doc = list(range(n)) + [n + u for u in row_u] + [n + k + u for u in row_u]
        scores = self._score_docs(docs, row_doc, torch.cat([delta, delta, delta]))
        self.times.score += self._tick() - start
        self.times.rows += n
        return [
            RowOutput(
                tokens=replies[i],
                logprob=scores[i],
                logprob_cond=float(lps[i, : len(replies[i])].mean()),
                chosen=scores[n + i],
                rejected=scores[2 * n + i],
                chosen_cond=chosen_c[i],
                rejected_cond=rejected_c[i],
            )
            for i in range(n)
        ]

    def _delta(self, mults: torch.Tensor) -> torch.Tensor:
        """(rows, H) steering added after layer L: `Steering.delta`'s arithmetic, precomputed once."""
        vec = self.vector.to(self.stack.device)
        return (mults.to(vec.device)[:, None] * vec[None, :]).to(self.dtype)

    def _tick(self) -> float:
        if self.stack.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def _forward(self, chunk: _Chunk, delta: torch.Tensor, cache: SlotCache | None) -> torch.Tensor:
        """Layers 0..L on the unique sequences, then steering and layers L+1.. on every row."""
        stack, cut, dev = self.stack, self.layer + 1, self.stack.device
        mask, pos = chunk.mask.to(dev), chunk.pos.to(dev)
        hidden = stack.embed_ids(chunk.ids)
        rope = stack.rope(hidden, pos)
        hidden = stack.run(hidden, 0, cut, mask=mask, positions=pos, cache=cache, rope=rope)
        idx = chunk.expand.to(hidden.device)
        hidden = hidden.index_select(0, idx) + delta[:, None, :].to(hidden.device)
        mask, pos = mask.index_select(0, idx.to(dev)), pos.index_select(0, idx.to(dev))
        rope = (rope[0].index_select(0, idx.to(rope[0].device)), rope[1].index_select(0, idx.to(rope[1].device)))
        return stack.run(hidden, cut, stack.num_layers, mask=mask, positions=pos, cache=cache, rope=rope)

    # -- prefill -----------------------------------------------------------------------------------

    def _prefill(
        self, ps: list[PromptInput], row_u: list[int], delta: torch.Tensor, cache: SlotCache
    ) -> tuple[torch.Tensor, list[float], list[float]]:
        """First-token logits (rows, vocab) and per-row prompt-conditioned chosen/rejected means."""
        pm_all = max(len(p.prompt) for p in ps)
        firsts: list[torch.Tensor] = []  # raw (model-dtype) logits of each row's first new token
        chosen: list[torch.Tensor] = []
        rejected: list[torch.Tensor] = []
        for chunk in _chunks(ps, row_u, self.chunk_tokens, lambda group: _prompt_layout(group, self.pad_id)):
            cache.prefill(chunk.rows, pm_all - chunk.pm, chunk.pm, chunk.expand)
            hidden = self._forward(chunk, delta[chunk.rows], cache)
            firsts.append(self.stack.raw_logits(hidden[:, chunk.pm - 1]))
            means, _ = self._gather_means(hidden, chunk, kinds=2)  # every reply has its end-of-turn token
            chosen.append(means[: hidden.shape[0]])
            rejected.append(means[hidden.shape[0] :])
        return torch.cat(firsts), torch.cat(chosen).tolist(), torch.cat(rejected).tolist()

    def _gather_means(self, hidden: torch.Tensor, chunk: _Chunk, kinds: int) -> tuple[torch.Tensor, list[bool]]:
        """Mean log-prob per (kind, row) of the targets in `chunk.plan`, kind-major, rows in chunk order.

        The means stay on the device (no sync per chunk); the list says which have any target.
        """
        n, t, h = hidden.shape
        flat: list[int] = []
        targets: list[int] = []
        owners: list[int] = []
        for j, u in enumerate(chunk.expand.tolist()):
            positions, tgts, kind = chunk.plan[u]
            flat += [j * t + p for p in positions]
            targets += tgts
            owners += [k * n + j for k in kind]
        picked = hidden.reshape(n * t, h)[torch.tensor(flat, dtype=torch.long, device=hidden.device)]
        lp = self.stack.token_logprobs(picked, torch.tensor(targets, dtype=torch.long))
        own = torch.tensor(owners, dtype=torch.long)
        counts = torch.bincount(own, minlength=kinds * n)
        sums = torch.zeros(kinds * n, device=lp.device).index_add_(0, own.to(lp.device), lp)
        return sums / counts.clamp(min=1).to(lp.device), (counts > 0).tolist()

    # -- decode ------------------------------------------------------------------------------------

    def _decode(
        self,
        ps: list[PromptInput],
        row_u: list[int],
        rows: list[RowInput],
        raw: torch.Tensor,
        delta: torch.Tensor,
        cache: SlotCache,
        sampling: Sampling,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, steps) tokens and their log-probs under the unwarped distribution, on the CPU."""
        uniforms = row_uniforms([r.seed for r in rows], sampling.max_new_tokens, raw.device)
        buf = DecodeBuffers.create(raw, [len(ps[u].prompt) for u in row_u], uniforms, delta, sampling)
        done = decode(self.stack, self.layer, cache, buf, sampling, graphs=self.fast)
        self.times.steps += done
        return buf.tokens[:, :done].cpu(), buf.lps[:, :done].cpu()

    # -- scoring without the prompt ----------------------------------------------------------------

    def _score_docs(self, docs: list[list[int]], row_doc: list[int], delta: torch.Tensor) -> list[float | None]:
        """Mean log p(x_t | x_<t), t >= 2 (1-based), of each row's document under that row's steering."""
        out: list[float | None] = [None] * len(row_doc)
        order = sorted(range(len(row_doc)), key=lambda r: (-len(docs[row_doc[r]]), row_doc[r]))
        sorted_docs = sorted({row_doc[r] for r in order}, key=lambda d: (-len(docs[d]), d))
        remap = {d: i for i, d in enumerate(sorted_docs)}
        group = [docs[d] for d in sorted_docs]
        row_u = [remap[row_doc[r]] for r in order]
        parts: list[tuple[torch.Tensor, list[bool], slice]] = []
        for chunk in _chunks(group, row_u, self.chunk_tokens, lambda g: _doc_layout(g, self.pad_id)):
            hidden = self._forward(chunk, delta[torch.tensor(order[chunk.rows], device=delta.device)], None)
            means, has = self._gather_means(hidden, chunk, kinds=1)
            parts.append((means, has, chunk.rows))
        if not parts:
            return out
        values = torch.cat([m for m, _, _ in parts]).tolist()
        flags = [f for _, has, _ in parts for f in has]
        slots = [i for _, _, rows in parts for i in range(rows.start, rows.stop)]
        for slot, value, flag in zip(slots, values, flags, strict=True):
            out[order[slot]] = value if flag else None
        return out


def run_batches(
    engine: GenerationEngine,
    prompts: Sequence[PromptInput],
    rows: Sequence[RowInput],
    sampling: Sampling,
    *,
    batch_size: int = 0,
    on_oom: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[int], list[RowOutput]]]:
    """Generate `rows` batch by batch; yields (indices into `rows`, outputs).

    Longest prompts go first, so padding stays small and an out-of-memory error comes early; a batch
    holds `batch_size` rows, or (0) as many as free memory allows, and is halved after an OOM.
    """
    queue = sorted(range(len(rows)), key=lambda i: (-len(prompts[rows[i].prompt].prompt), i))
    oom_cap = 1 << 30
    while queue:
        slots = engine.cache_slots([prompts[rows[queue[0]].prompt]], sampling)
        batch = queue[: min(batch_size or engine.max_rows(slots), oom_cap)]
        try:
            outs = engine.generate(prompts, [rows[i] for i in batch], sampling)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            oom_cap = len(batch) // 2
            torch.cuda.empty_cache()
            if on_oom is not None:
                on_oom(oom_cap)
            continue
        queue = queue[len(batch) :]
        yield batch, outs


# -- layouts -----------------------------------------------------------------------------------------


def _chunks(items: list[Any], row_u: list[int], budget: int, layout: Any) -> list[_Chunk]:
    """Split rows (grouped by unique item, `row_u` non-decreasing) into chunks of about `budget` row-tokens.

    A chunk holds whole items with all their rows, so the layers below the steering layer run once per item.
    """
    counts: dict[int, int] = {}
    for u in row_u:
        counts[u] = counts.get(u, 0) + 1
    groups: list[list[int]] = [[]]
    widths: list[int] = []
    rows = 0
    for u in sorted(counts):
        dims = _dims(items[u])
        grown = [max(a, b) for a, b in zip(widths, dims, strict=True)] if widths else list(dims)
        if groups[-1] and (rows + counts[u]) * sum(grown) > budget:
            groups.append([])
            grown, rows = list(dims), 0
        groups[-1].append(u)
        widths, rows = grown, rows + counts[u]
    chunks, start = [], 0
    for group in groups:
        n = sum(counts[u] for u in group)
        chunk = layout([items[u] for u in group])
        chunk.expand = torch.tensor([u - group[0] for u in row_u[start : start + n]])
        chunk.rows = slice(start, start + n)
        chunks.append(chunk)
        start += n
    return chunks


def _dims(item: Any) -> tuple[int, ...]:
    if isinstance(item, PromptInput):
        return (len(item.prompt), len(item.chosen) + len(item.rejected))
    return (len(item),)


def _prompt_layout(group: list[PromptInput], pad: int) -> _Chunk:
    """[left-padded prompt | chosen | rejected | pad] per prompt, with the tree mask.

    Positions are explicit and the mask follows segment ids, so the two replies can sit side by side:
    both continue the prompt's positions, and rejected never sees chosen.
    """
    pm = max(len(p.prompt) for p in group)
    width = max(len(p.chosen) + len(p.rejected) for p in group)
    ids, valid, seg, pos, plan = [], [], [], [], []
    for p in group:
        n, c, r = len(p.prompt), len(p.chosen), len(p.rejected)
        tail = width - c - r
        ids.append([pad] * (pm - n) + list(p.prompt) + list(p.chosen) + list(p.rejected) + [pad] * tail)
        valid.append([False] * (pm - n) + [True] * (n + c + r) + [False] * tail)
        seg.append([0] * pm + [1] * c + [2] * r + [0] * tail)
        pos.append([0] * (pm - n) + list(range(n + c)) + list(range(n, n + r)) + [0] * tail)
        c_pos = [pm - 1] + [pm + i - 1 for i in range(1, c)]
        r_pos = [pm - 1] + [pm + c + i - 1 for i in range(1, r)]
        plan.append((c_pos + r_pos, list(p.chosen) + list(p.rejected), [0] * c + [1] * r))
    return _Chunk(
        ids=torch.tensor(ids),
        mask=doc_mask(torch.tensor(valid), torch.tensor(seg)),
        pos=torch.tensor(pos),
        expand=torch.zeros(0, dtype=torch.long),
        rows=slice(0),
        pm=pm,
        plan=plan,
    )


def _doc_layout(group: list[list[int]], pad: int) -> _Chunk:
    """Right-padded documents scored from position 0, each on its own."""
    width = max(len(d) for d in group)
    ids = torch.tensor([d + [pad] * (width - len(d)) for d in group])
    valid = torch.tensor([[True] * len(d) + [False] * (width - len(d)) for d in group])
    plan = [(list(range(len(d) - 1)), d[1:], [0] * (len(d) - 1)) for d in group]
    pos = torch.arange(width)[None, :].expand(len(group), width).contiguous()
    return _Chunk(ids=ids, mask=doc_mask(valid), pos=pos, expand=torch.zeros(0, dtype=torch.long), rows=slice(0),
                  plan=plan)  # fmt: skip


def _cut(tokens: torch.Tensor, stop_ids: tuple[int, ...]) -> list[int]:
    """A row's tokens up to and including its first stop token."""
    out = tokens.tolist()
    for i, tok in enumerate(out):
        if tok in stop_ids:
            return out[: i + 1]
    return out
