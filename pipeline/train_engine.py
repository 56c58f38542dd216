"""The BiPO training loop's machinery: data preparation, the reference pass, epochs and evaluation.

`Engine.prepare` tokenises both splits, runs one pass with the vector off that yields the reference
log-probs (cached on disk) and, on the split path, each example's layer-L output (kept in memory when it
fits, on the GPU or pinned CPU RAM). Steps then run only the layers above L.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psutil
import torch

from pipeline.bipo import bipo_loss
from pipeline.crashpoints import crash_point
from pipeline.data import DPOPair
from pipeline.errors import Interrupted
from pipeline.models import LoadedModel
from pipeline.progress import Reporter
from pipeline.train_data import Example, PackedBatch, collate, length_buckets, tokenize_pairs
from pipeline.train_dist import Dist, shard_rows
from pipeline.train_forward import HookedForward, SplitForward, supports_split
from pipeline.train_state import examples_digest, load_reference, reference_cache_path, save_reference

if TYPE_CHECKING:
    from pipeline.train import TrainJob

REPORT_EVERY_S = 1.0
METRIC_KEYS = ("loss", "rewards_chosen", "rewards_rejected", "accuracies", "margins", "logps_chosen",
               "logps_rejected", "logits_chosen", "logits_rejected")  # fmt: skip


class Split:
    """One dataset split: examples, reference log-probs and (optionally) cached layer-L outputs.

    The cache is one flat (tokens + 1, H) tensor; row `offsets[i] + t` is example i's position t and the
    last row is zeros, for padding. A batch is then a single gather.
    """

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples
        self.ref_chosen = torch.zeros(len(examples))
        self.ref_rejected = torch.zeros(len(examples))
        lengths = torch.tensor([e.packed_len for e in examples], dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        self.prefix: torch.Tensor | None = None

    def gather_index(self, idx: Sequence[int], width: int) -> torch.Tensor:
        """(B, width) rows of the flat cache for a batch; padding points at the zero row."""
        pad = int(self.offsets[-1])
        index = torch.full((len(idx), width), pad, dtype=torch.long)
        for r, i in enumerate(idx):
            n = self.examples[i].packed_len
            index[r, :n] = torch.arange(int(self.offsets[i]), int(self.offsets[i]) + n)
        return index


class Engine:
    def __init__(self, lm: LoadedModel, job: TrainJob, d: Dist, reporter: Reporter) -> None:
        self.lm = lm
        self.job = job
        self.cfg = job.train
        self.d = d
        self.rep = reporter
        self.pad = int(lm.tokenizer.pad_token_id)
        self.split_path = supports_split(lm.model)
        if self.cfg.gradient_checkpointing and not self.split_path:
            lm.model.gradient_checkpointing_enable()
        compile_upper = self.cfg.compile and lm.device.startswith("cuda")
        self.forward = SplitForward(
            lm.model, job.layer, gradient_checkpointing=self.cfg.gradient_checkpointing, compile=compile_upper
        )
        self.global_step = 0
        self.train: Split
        self.test: Split

    # -- preparation -------------------------------------------------------------------------------
    def prepare(self, train_pairs: Sequence[DPOPair], test_pairs: Sequence[DPOPair]) -> None:
        self.prepare_examples(self._split(train_pairs, "train").examples, self._split(test_pairs, "test").examples)

    def prepare_examples(self, train: list[Example], test: list[Example]) -> None:
        """Reference pass (and prefix cache) over already tokenised examples."""
        self.train, self.test = Split(train), Split(test)
        keep = self.split_path and self._prefix_fits()
        self.rep.message(
            f"reference pass over {len(train)} train + {len(test)} test pairs, vector off "
            f"(once; cached{' with the layers up to L' if keep else ''})"
        )
        for split in (self.train, self.test):
            self._reference_pass(split, keep_prefix=keep)
        self.rep.message(f"training: {self.steps_per_epoch()} steps per epoch x {self.cfg.epochs} epochs")

    def _split(self, pairs: Sequence[DPOPair], name: str) -> Split:
        examples, report = tokenize_pairs(
            self.lm.tokenizer, pairs, system_prompt=self.job.system_prompt, prompt_format=self.cfg.prompt_format,
            max_length=self.cfg.max_length, truncation=self.cfg.truncation,
        )  # fmt: skip
        if report.truncated:
            self.rep.message(
                f"warning: {report.truncated} {name} pair(s) longer than train.max_length = {self.cfg.max_length} "
                f"were truncated (longest {report.longest} tokens)"
            )
        return Split(examples)

    def _prefix_fits(self) -> bool:
        """Keep layer-L outputs in memory when they take under a quarter of what is free (per rank)."""
        total = sum(e.packed_len for e in self.train.examples + self.test.examples)
        need = total * self.lm.hidden_size * torch.finfo(self.lm.dtype).bits // 8
        if self.lm.device.startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(self.lm.device))
            if need < free * 0.25:
                self.prefix_device = self.lm.device
                return True
        self.prefix_device = "cpu"
        return bool(need < psutil.virtual_memory().available * 0.4 / self.d.world)

    def _reference_pass(self, split: Split, *, keep_prefix: bool) -> None:
        """Reference log-probs (from the disk cache when present) and layer-L outputs, vector off.

        With a prefix cache every rank runs every row (each needs all of them); otherwise ranks share rows.
        """
        n = len(split.examples)
        cache = reference_cache_path(
            self.job.ws.cache_dir, self.job.model, self.lm.dtype, examples_digest(split.examples)
        )
        cached = load_reference(cache, n)
        if cached is not None and not keep_prefix:
            split.ref_chosen, split.ref_rejected = (t.to(self.lm.device) for t in cached)
            return
        if keep_prefix:
            rows = int(split.offsets[-1]) + 1
            split.prefix = torch.zeros((rows, self.lm.hidden_size), dtype=self.lm.dtype, device=self.prefix_device)
        shard = not keep_prefix
        chosen, rejected = torch.zeros(n), torch.zeros(n)
        for idx, valid in rank_chunks(n, self.cfg.batch_size * 2, self.d, shard=shard):
            batch = collate([split.examples[i] for i in idx], idx, self.pad).to(self.lm.device)
            h, (rc, rr, _, _) = self._reference(batch)
            ids = [i for i, ok in zip(idx, valid, strict=True) if ok]
            keep = torch.tensor(valid)
            chosen[ids], rejected[ids] = rc.float().cpu()[keep], rr.float().cpu()[keep]
            if split.prefix is not None and h is not None:
                for row, i in enumerate(idx):
                    start, n = int(split.offsets[i]), split.examples[i].packed_len
                    split.prefix[start : start + n] = h[row, :n].to(self.prefix_device)
        if shard:
            self.d.all_reduce_sum(chosen)
            self.d.all_reduce_sum(rejected)
        chosen, rejected = cached if cached is not None else (chosen, rejected)
        if cached is None and self.d.main:
            save_reference(cache, chosen, rejected)
        split.ref_chosen, split.ref_rejected = chosen.to(self.lm.device), rejected.to(self.lm.device)
        if split.prefix is not None and self.prefix_device == "cpu" and torch.cuda.is_available():
            split.prefix = split.prefix.pin_memory()

    @torch.no_grad()
    def _reference(self, batch: PackedBatch) -> tuple[torch.Tensor | None, Any]:
        if self.split_path:
            return self.forward.reference(batch)
        hooked = HookedForward(self.lm.model, self.job.layer, torch.zeros(self.lm.hidden_size))
        return None, hooked.logps(batch, 0.0)

    # -- optimisation ------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        micro = math.ceil(len(self.train.examples) / (self.cfg.batch_size * self.d.world))
        return math.ceil(micro / self.cfg.grad_accum)

    def optimizer(self, vector: torch.nn.Parameter) -> tuple[torch.optim.Optimizer, Any]:
        from transformers import get_cosine_schedule_with_warmup

        opt = torch.optim.AdamW(
            [vector], lr=self.cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=self.cfg.weight_decay
        )
        total = self.steps_per_epoch() * self.cfg.epochs
        return opt, get_cosine_schedule_with_warmup(opt, self.cfg.warmup_steps, total)

    def train_epoch(self, epoch: int, vector: torch.nn.Parameter, opt: torch.optim.Optimizer, sched: Any) -> None:
        gen = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
        order = torch.randperm(len(self.train.examples), generator=gen).tolist()
        batches = length_buckets(self.train.examples, order, self.cfg.batch_size, gen)
        batches = batches[: len(batches) - len(batches) % self.d.world] if self.d.enabled else batches
        mine = shard_rows(batches, self.d)
        signs_rng = random.Random(self.cfg.seed * 1_000_003 + epoch)
        total = self.steps_per_epoch() * self.cfg.epochs
        last_report, losses = time.monotonic(), []
        groups = [mine[i : i + self.cfg.grad_accum] for i in range(0, len(mine), self.cfg.grad_accum)]
        for n, group in enumerate(groups, start=1):
            loss = torch.zeros((), device=self.lm.device)
            for idx in group:
                out = self._loss(self.train, idx, vector, self._signs(signs_rng, len(idx)))
                (out.loss / len(group)).backward()
                loss += out.loss.detach() / len(group)
            self._step(vector, opt, sched)
            self.global_step += 1
            crash_point(f"train_step:{self.global_step}")
            losses.append(loss)
            # Reading values from the GPU waits for it; do so only when a report is due.
            if time.monotonic() - last_report >= REPORT_EVERY_S or n == len(groups):
                last_report = time.monotonic()
                mean = float(torch.stack(losses).mean())
                losses = []
                self.rep.progress(self.global_step, total, loss=mean, epoch=epoch, lr=sched.get_last_lr()[0],
                                  norm=float(vector.detach().norm()))  # fmt: skip
                if self.rep.should_stop():
                    raise Interrupted(f"stopped during epoch {epoch}; rerun to resume from epoch {epoch - 1}")

    def _signs(self, rng: random.Random, n: int) -> torch.Tensor:
        if self.cfg.sign_mode == "row":
            return torch.tensor([rng.choice((-1.0, 1.0)) for _ in range(n)])
        return torch.full((n,), rng.choice((-1.0, 1.0)))

    def _step(self, vector: torch.nn.Parameter, opt: torch.optim.Optimizer, sched: Any) -> None:
        if vector.grad is not None:
            self.d.all_reduce_mean(vector.grad)
        torch.nn.utils.clip_grad_norm_([vector], self.cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    def _loss(self, split: Split, idx: Sequence[int], vector: torch.Tensor, signs: torch.Tensor) -> Any:
        out, _ = self._policy(split, idx, vector, signs)
        return out

    def _policy(self, split: Split, idx: Sequence[int], vector: torch.Tensor, signs: torch.Tensor) -> tuple[Any, Any]:
        dev = self.lm.device
        batch = collate([split.examples[i] for i in idx], list(idx), self.pad).to(dev)
        signs = signs.to(dev)
        if self.split_path:
            h = self._prefix(split, idx, batch)
            logps = self.forward.upper(h, batch, signs[:, None, None] * vector[None, None, :])
        else:
            logps = HookedForward(self.lm.model, self.job.layer, vector).logps(batch, signs)
        rc, rr = split.ref_chosen[batch.row_index], split.ref_rejected[batch.row_index]
        return bipo_loss(logps[0], logps[1], rc, rr, signs, self.cfg.beta), logps

    def _prefix(self, split: Split, idx: Sequence[int], batch: PackedBatch) -> torch.Tensor:
        if split.prefix is None:
            return self.forward.prefix(batch)
        index = split.gather_index(idx, batch.input_ids.shape[1])
        if split.prefix.device.type == "cpu":
            return split.prefix[index].to(self.lm.device, non_blocking=True)
        return split.prefix[index.to(split.prefix.device, non_blocking=True)]

    # -- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, epoch: int, vector: torch.Tensor) -> list[dict[str, Any]]:
        """Add (+1) then sub (-1) over the whole test set, summed across ranks."""
        from pipeline.train import metric_row

        rows = []
        for sign in (1.0, -1.0):
            sums = torch.zeros(len(METRIC_KEYS) + 1, dtype=torch.float64)
            for idx, valid in rank_chunks(len(self.test.examples), self.cfg.batch_size * 2, self.d, shard=True):
                out, logps = self._policy(self.test, idx, vector, torch.full((len(idx),), sign))
                w = torch.tensor(valid, dtype=torch.float32, device=out.losses.device)
                margins = out.chosen_rewards - out.rejected_rewards
                values = [(out.losses * w).sum(), (out.chosen_rewards * w).sum(), (out.rejected_rewards * w).sum(),
                          ((margins > 0).float() * w).sum(), (margins * w).sum(), (logps[0] * w).sum(),
                          (logps[1] * w).sum(), logps[2] * w.sum(), logps[3] * w.sum(), w.sum()]  # fmt: skip
                sums += torch.tensor([float(v) for v in values], dtype=torch.float64)
            self.d.all_reduce_sum(sums)
            n = int(sums[-1].item())
            rows.append(metric_row(epoch, sign, dict(zip(METRIC_KEYS, sums[:-1].tolist(), strict=True)), n))
        return rows


def rank_chunks(n: int, size: int, d: Dist, *, shard: bool) -> list[tuple[list[int], list[bool]]]:
    """Row chunks for this rank, the same number on every rank (FSDP layers need matching calls).

    When sharding, the row list is padded with repeats of row 0 flagged invalid.
    """
    rows = list(range(n))
    if not (shard and d.enabled):
        return [(rows[i : i + size], [True] * len(rows[i : i + size])) for i in range(0, n, size)]
    per = math.ceil(n / (d.world * size)) * size
    padded = rows + [0] * (per * d.world - n)
    valid = [True] * n + [False] * (per * d.world - n)
    mine, ok = padded[d.rank * per : (d.rank + 1) * per], valid[d.rank * per : (d.rank + 1) * per]
    return [(mine[i : i + size], ok[i : i + size]) for i in range(0, per, size)]
