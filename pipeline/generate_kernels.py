"""Single-token GQA attention over the slot cache, for the decode step of `pipeline.generate_engine`.

Row i's valid keys are the contiguous slots [start[i], end): its left-padded prompt is right-aligned
at the same slot for every row and each decode step writes the next slot, so no mask tensor is
needed, and `end` is a device scalar, so a captured CUDA graph can replay the step as the cache grows.

- `decode_attention_reference`: plain torch (any device), each K/V head read once for its query group
  and the scores in fp32; the CPU path and the check for the kernel.
- the Triton kernel (CUDA): one program per (row, K/V head), an online softmax over blocks of slots
  from the row's own first valid slot, so the left padding is never read. HF's SDPA path would first
  copy K/V once per query head (`repeat_kv`), and batched matmuls with 4 query rows per K/V head run
  on slow tensor-core tiles (8x the memory-bound time on an H200).
"""

from __future__ import annotations

import torch

BLOCK_SLOTS = 64  # cache slots per inner step of the kernel
MIN_DOT = 16  # tl.dot needs at least 16 rows: the query group is padded to it


def decode_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, start: torch.Tensor, end: torch.Tensor, scale: float
) -> torch.Tensor:
    """(rows, 1, heads, head_dim) attention output for one query token per row.

    query (rows, heads, 1, head_dim); key/value (rows, kv_heads, slots, head_dim); start (rows,) int32
    first valid slot per row; end () int32, one past the last valid slot for every row.
    """
    if triton is not None and _kernel_applies(query):
        return _decode_triton(query, key, value, start, end, scale)
    return decode_attention_reference(query, key, value, start, end, scale)


def decode_attention_reference(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, start: torch.Tensor, end: torch.Tensor, scale: float
) -> torch.Tensor:
    b, h, _, d = query.shape
    kvh, slots = key.shape[1], key.shape[2]
    idx = torch.arange(slots, device=key.device)
    valid = (idx[None, :] >= start[:, None].to(idx.dtype)) & (idx[None, :] < end.to(idx.dtype))
    q = query.reshape(b, kvh, h // kvh, d)
    scores = torch.matmul(q.float(), key.float().transpose(-1, -2)).mul_(scale)
    scores = scores.masked_fill_(~valid[:, None, None, :], float("-inf"))
    out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # (rows, kv_heads, group, head_dim)
    return out.reshape(b, 1, h, d)


def _kernel_applies(query: torch.Tensor) -> bool:
    """CUDA, half precision (fp32 would run its dots in tf32) and a power-of-two head dim."""
    d = query.shape[-1]
    return query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) and d >= MIN_DOT and d & (d - 1) == 0


try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference path serves
    triton = None

if triton is not None:

    @triton.jit  # type: ignore[misc]
    def _kernel(q_ptr, k_ptr, v_ptr, o_ptr, start_ptr, end_ptr, sq_b, sq_h, sk_b, sk_h, sk_s, so_b, so_h, scale,  # type: ignore[no-untyped-def]
               GROUP: tl.constexpr, GPAD: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)  # row * stride can pass 2**31 in a large cache
        kvh = tl.program_id(1)
        first = tl.load(start_ptr + row)
        last = tl.load(end_ptr)
        g = tl.arange(0, GPAD)
        d = tl.arange(0, D)
        heads = kvh * GROUP + g
        q = tl.load(q_ptr + row * sq_b + heads[:, None] * sq_h + d[None, :], mask=(g < GROUP)[:, None], other=0.0)
        m = tl.full([GPAD], float("-inf"), tl.float32)
        total = tl.zeros([GPAD], tl.float32)
        acc = tl.zeros([GPAD, D], tl.float32)
        base = row * sk_b + kvh * sk_h
        for s0 in range(first, last, BLOCK):
            s = s0 + tl.arange(0, BLOCK)
            ok = s < last
            k = tl.load(k_ptr + base + s[:, None] * sk_s + d[None, :], mask=ok[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k)) * scale
            scores = tl.where(ok[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, 1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            total = total * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + base + s[:, None] * sk_s + d[None, :], mask=ok[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        out = acc / total[:, None]
        tl.store(o_ptr + row * so_b + heads[:, None] * so_h + d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=(g < GROUP)[:, None])  # fmt: skip


def _decode_triton(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, start: torch.Tensor, end: torch.Tensor, scale: float
) -> torch.Tensor:
    b, h, _, d = query.shape
    kvh = key.shape[1]
    group = h // kvh
    if key.stride(3) != 1 or value.stride() != key.stride() or query.stride(3) != 1:
        raise ValueError("decode attention needs K/V buffers with the same strides and a contiguous head dim")
    out = torch.empty(b, 1, h, d, dtype=query.dtype, device=query.device)
    with torch.cuda.device(query.device):  # layers spread over GPUs (device_map): launch where the data is
        _kernel[(b, kvh)](
            query, key, value, out, start, end,
            query.stride(0), query.stride(1), key.stride(0), key.stride(1), key.stride(2), out.stride(0), out.stride(2),
            scale, GROUP=group, GPAD=max(MIN_DOT, 1 << (group - 1).bit_length()), D=d, BLOCK=BLOCK_SLOTS,
        )  # fmt: skip
    return out
