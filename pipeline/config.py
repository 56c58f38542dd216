"""Typed, frozen configuration for a workspace (`steertui.toml`).

Each section is a frozen dataclass validated on creation; `pipeline.config_load` builds them from
defaults < file < `STEERTUI_*` env < flags. Field comments are the documentation (the README's config
reference is generated from the same dataclasses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pipeline.errors import ConfigError
from pipeline.prompting_spec import (
    LEVEL_COUNTS,
    VECTOR,
    ProviderSpec,
    VectorSpec,
    level_multipliers,
    level_of,
    parse_provider,
    parse_vector,
)
from pipeline.workspace import short_model_name

# The study's 21 multipliers (SPEC §4.2).
STUDY_MULTIPLIERS: tuple[float, ...] = (
    -20.0, -10.0, -5.0, -4.0, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5,
    0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 10.0, 20.0,
)  # fmt: skip
DEFAULT_SYSTEM_PROMPT = "You are a conversational assistant."
DEFAULT_JUDGE = "openai:gpt-4o-2024-08-06"
JUDGE_PROVIDERS = ("openai", "anthropic")


def _require(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {problem}")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the matrix and the layers to train on it."""

    name: str  # hub id, local directory, .gguf file, or alias (smollm2-135m, tiny-random)
    layers: tuple[int, ...]  # decoder-layer indices (0-based) to train a vector at
    eval_epochs: tuple[int, ...] = ()  # epochs to generate/score; empty = [generate].epochs
    train_gpus: int = 0  # GPUs for this model's training (FSDP if > 1); 0 = [train].gpus
    generate_gpus: int = 0  # GPUs per generation worker (device_map across them); 0 = [generate].gpus

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "models.name", "must not be empty")
        _require(len(self.layers) > 0, f"models[{self.name}].layers", "must list at least one layer")
        _require(all(x >= 0 for x in self.layers), f"models[{self.name}].layers", "layers are >= 0")
        _require(len(set(self.layers)) == len(self.layers), f"models[{self.name}].layers", "duplicate layer")
        _require(all(e >= 1 for e in self.eval_epochs), f"models[{self.name}].eval_epochs", "epochs are >= 1")
        _require(self.train_gpus >= 0 and self.generate_gpus >= 0, f"models[{self.name}]", "gpus are >= 0")

    @property
    def short(self) -> str:
        return short_model_name(self.name)


@dataclass(frozen=True)
class TrainConfig:
    """BiPO training (SPEC §4.1)."""

    epochs: int = 20  # training epochs; a vector is saved after each
    batch_size: int = 4  # DPO pairs per micro-batch per device
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-4  # AdamW learning rate
    beta: float = 0.1  # DPO temperature
    warmup_steps: int = 100  # linear warm-up steps before the cosine decay
    weight_decay: float = 0.0  # AdamW weight decay on the vector (the study effectively ran 0)
    max_grad_norm: float = 1.0  # gradient clipping
    max_pairs: int = 0  # use only the first N training pairs (0 = all)
    eval_pairs: int = 0  # evaluate each epoch on the first N test pairs (0 = the whole test set; CPU demos)
    max_length: int = 1024  # prompt + response tokens per sequence
    truncation: Literal["warn", "reject"] = "warn"  # a pair longer than max_length: keep its end, or refuse
    sign_mode: Literal["batch", "row"] = "batch"  # one random sign per micro-batch (study) or per row
    prompt_format: Literal["chat", "seed"] = "chat"  # "seed" = the study's header-less training prompt
    gradient_checkpointing: bool = False  # trade compute for activation memory
    compile: bool = True  # torch.compile the layers above L on CUDA (fuses norms, rotary, activations)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto = float32 on CPU, bfloat16 on GPU
    gpus: int = 1  # GPUs per training job (> 1 = FSDP through accelerate)
    seed: int = 11  # data order, signs and initial RNG

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "grad_accum", "max_length", "gpus"):
            _require(getattr(self, key) >= 1, f"train.{key}", f"must be >= 1, got {getattr(self, key)}")
        _require(self.lr > 0, "train.lr", "must be > 0")
        _require(self.beta > 0, "train.beta", "must be > 0")
        for key in ("warmup_steps", "max_pairs", "eval_pairs"):
            _require(getattr(self, key) >= 0, f"train.{key}", "must be >= 0")
        _require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _require(self.max_grad_norm > 0, "train.max_grad_norm", "must be > 0")


@dataclass(frozen=True)
class GenerateConfig:
    """Steered generation (SPEC §4.2)."""

    epochs: tuple[int, ...] = ()  # vector epochs to generate from; empty = the last trained epoch
    multipliers: tuple[float, ...] = STUDY_MULTIPLIERS  # one reply per test prompt per multiplier
    max_prompts: int = 0  # use only the first N test prompts (0 = all)
    max_new_tokens: int = 100  # tokens generated per reply
    temperature: float = 1.0  # sampling temperature (the study: 1.0)
    top_p: float = 0.9  # nucleus sampling (Llama-3.1-Instruct's default, which the study used implicitly)
    top_k: int = 0  # 0 = off
    greedy: bool = False  # greedy decoding instead of sampling
    batch_size: int = 0  # rows per batch; 0 = fit to free memory
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto = float32 on CPU, bfloat16 on GPU
    gpus: int = 1  # GPUs per generation worker
    seed: int = 0  # sampling seed (per row, so batching does not change samples)
    fast: bool = True  # one CUDA GPU: fused kernels and CUDA-graph decoding (false = HF's layers as they are)

    def __post_init__(self) -> None:
        _require(len(self.multipliers) > 0, "generate.multipliers", "must list at least one multiplier")
        _require(len(set(self.multipliers)) == len(self.multipliers), "generate.multipliers", "duplicate multiplier")
        _require(all(math.isfinite(m) for m in self.multipliers), "generate.multipliers", "must be finite")
        _require(all(e >= 1 for e in self.epochs), "generate.epochs", "epochs are >= 1")
        _require(self.max_new_tokens >= 1, "generate.max_new_tokens", "must be >= 1")
        _require(self.temperature > 0, "generate.temperature", "must be > 0 (use greedy = true)")
        _require(0 < self.top_p <= 1, "generate.top_p", "must be in (0, 1]")
        for key in ("top_k", "max_prompts", "batch_size"):
            _require(getattr(self, key) >= 0, f"generate.{key}", "must be >= 0")
        _require(self.gpus >= 1, "generate.gpus", "must be >= 1")


@dataclass(frozen=True)
class JudgeConfig:
    """LLM-judge scoring (SPEC §4.3)."""

    judge: str = DEFAULT_JUDGE  # provider:model, provider one of openai, anthropic
    tasks: tuple[str, ...] = ()  # coherence, <behaviour task>, pairwise; empty = all three
    mode: Literal["sync", "batch"] = "sync"  # sync (async client) or the providers' Batch APIs (half price)
    base_url: str = ""  # an OpenAI-compatible endpoint (e.g. a local vLLM); empty = the provider's default
    budget_usd: float = math.inf  # hard cap on spending for the workspace
    concurrency: int = 32  # upper bound on parallel sync requests (adapts down on 429)
    timeout_s: float = 60.0  # per request
    max_retries: int = 6  # rate limits, 5xx and timeouts only
    max_reasks: int = 2  # extra asks when an answer is unparseable or out of range
    position_debias: Literal["none", "both"] = "none"  # "both" judges each pair in both orders
    pairwise_min: float = -4.0  # pairwise compares the multipliers in [pairwise_min, pairwise_max]
    pairwise_max: float = 4.0  # (the study: -4..4, 15 multipliers, 105 pairs per prompt)
    max_tokens: int = 20  # judge answer tokens (a JSON score or A/B)
    batch_poll_s: float = 30.0  # seconds between batch status polls
    batch_fallback_sync: bool = True  # score stragglers of failed/expired batches in sync mode
    seed: int = 0  # few-shot choice and A/B position

    def __post_init__(self) -> None:
        provider, _, model = self.judge.partition(":")
        _require(
            provider in JUDGE_PROVIDERS and bool(model),
            "judge.judge",
            f"expected openai:MODEL or anthropic:MODEL, got {self.judge!r}",
        )
        _require(self.budget_usd >= 0, "judge.budget_usd", "must be >= 0")
        _require(self.concurrency >= 1, "judge.concurrency", "must be >= 1")
        _require(self.timeout_s > 0, "judge.timeout_s", "must be > 0")
        _require(self.max_retries >= 0 and self.max_reasks >= 0, "judge.max_retries", "must be >= 0")
        _require(self.pairwise_min < self.pairwise_max, "judge.pairwise_min", "must be < pairwise_max")
        _require(self.max_tokens >= 1, "judge.max_tokens", "must be >= 1")
        _require(self.batch_poll_s > 0, "judge.batch_poll_s", "must be > 0")

    @property
    def provider(self) -> str:
        return self.judge.partition(":")[0]

    @property
    def model(self) -> str:
        return self.judge.partition(":")[2]


@dataclass(frozen=True)
class Price:
    """USD per million tokens; batch requests cost `batch_discount` times as much."""

    input_per_m: float  # USD per million input tokens
    output_per_m: float  # USD per million output tokens
    batch_discount: float = 0.5  # batch requests cost this fraction

    def __post_init__(self) -> None:
        _require(self.input_per_m >= 0 and self.output_per_m >= 0, "prices", "must be >= 0")
        _require(0 < self.batch_discount <= 1, "prices.batch_discount", "must be in (0, 1]")


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-2024-08-06": Price(2.5, 10.0),
    "gpt-4o": Price(2.5, 10.0),
    "gpt-4o-mini": Price(0.15, 0.6),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.4, 1.6),
    "claude-3-7-sonnet-20250219": Price(3.0, 15.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
}


@dataclass(frozen=True)
class SchedulerConfig:
    """The headless runner and the TUI's scheduler (SPEC §3, §7)."""

    executor: Literal["local", "slurm"] = "local"  # where jobs run: local subprocesses or Slurm (sbatch)
    max_attempts: int = 3  # a failed job is retried until it has run this many times
    retry_backoff_s: float = 10.0  # doubled after each failure
    cpu_slots: int = 1  # concurrent CPU-only model jobs (CPU machines run them one at a time)
    judge_slots: int = 2  # concurrent scoring jobs (they use no GPU)
    poll_s: float = 1.0  # seconds between scheduler ticks
    cancel_grace_s: float = 10.0  # SIGINT, then SIGKILL after this long

    def __post_init__(self) -> None:
        _require(self.max_attempts >= 1, "scheduler.max_attempts", "must be >= 1")
        _require(self.cpu_slots >= 1 and self.judge_slots >= 1, "scheduler.cpu_slots", "must be >= 1")
        _require(self.poll_s > 0 and self.retry_backoff_s >= 0, "scheduler.poll_s", "must be > 0")


@dataclass(frozen=True)
class SlurmConfig:
    """Submission settings for `executor = "slurm"`."""

    partition: str = ""  # --partition (empty = the cluster default)
    account: str = ""  # --account
    time_limit: str = "24:00:00"  # --time per job; a job killed at its limit is retried and resumes
    gres: str = "gpu:{n}"  # `{n}` becomes the stage's GPU count; empty = no --gres
    cpus_per_task: int = 4  # --cpus-per-task
    mem: str = ""  # --mem (empty = the partition default)
    extra: tuple[str, ...] = ()  # extra `#SBATCH` lines, e.g. "--qos=high"
    poll_s: float = 5.0  # seconds between squeue/scontrol polls


@dataclass(frozen=True)
class PromptingConfig:
    """Prompting experiments (SPEC §4.4): prompted frontier models vs the steering vector."""

    providers: tuple[str, ...] = ()  # "[label=]anthropic:MODEL" / "[label=]openai:MODEL"; empty = no prompting cells
    experiments: tuple[Literal["steerability", "stability"], ...] = ("steerability", "stability")  # which to run
    levels: int = 7  # "Level k of N": 7 levels <-> multipliers -1.5..1.5, 9 levels <-> -2..2
    examples: int = 3  # few-shot level examples (from the rubric) in each system prompt
    max_prompts: int = 0  # exp1 test prompts: the first N; 0 = the same as generate.max_prompts
    max_tokens: int = 100  # per reply (prompted models and the steered model in exp2)
    temperature: float = 1.0  # prompted models' sampling temperature
    base_url: str = ""  # an OpenAI-compatible endpoint for the prompted models; empty = the provider's default
    vector: str = ""  # "MODEL:LAYER:EPOCH": ranked against the prompted models, and the local model of exp2
    stability_with: tuple[str, ...] = ()  # exp2: provider labels and/or "vector"; empty = all providers + vector
    stability_multipliers: tuple[float, ...] = (-1.5, 0.0, 1.5)  # exp2 multipliers (API models: their levels)
    themes: tuple[str, ...] = ()  # exp2 themes from the rubric's [persona]; empty = all
    seed: int = 0  # few-shot choice and the steered model's sampling

    def __post_init__(self) -> None:
        _require(self.levels in LEVEL_COUNTS, "prompting.levels", f"must be 7 or 9, got {self.levels}")
        _require(self.examples >= 1, "prompting.examples", "must be >= 1")
        _require(self.max_prompts >= 0, "prompting.max_prompts", "must be >= 0")
        _require(self.max_tokens >= 1, "prompting.max_tokens", "must be >= 1")
        _require(self.temperature >= 0, "prompting.temperature", "must be >= 0")
        labels = [p.label for p in self.provider_specs()]
        _require(len(set(labels)) == len(labels), "prompting.providers", "two providers share a label; add label=")
        self.vector_spec()
        mults = self.stability_multipliers
        _require(len(mults) > 0, "prompting.stability_multipliers", "must list at least one multiplier")
        _require(len(set(mults)) == len(mults), "prompting.stability_multipliers", "duplicate multiplier")
        _require(all(math.isfinite(m) for m in mults), "prompting.stability_multipliers", "must be finite")
        for name in self.stability_with:
            allowed = [*labels, VECTOR]
            _require(name in allowed, "prompting.stability_with", f"{name!r} is not one of {', '.join(allowed)}")
        _require(VECTOR not in self.stability_with or bool(self.vector), "prompting.stability_with",
                 '"vector" needs prompting.vector = "MODEL:LAYER:EPOCH"')  # fmt: skip
        if any(w != VECTOR for w in self.stability_who()):
            bad = [m for m in mults if level_of(m, self.levels) is None]
            levels = ", ".join(f"{m:g}" for m in level_multipliers(self.levels))
            _require(not bad, "prompting.stability_multipliers",
                     f"{bad[0] if bad else 0:g} is no level's multiplier (levels stand for {levels})")  # fmt: skip

    def provider_specs(self) -> tuple[ProviderSpec, ...]:
        out = []
        for i, entry in enumerate(self.providers):
            try:
                out.append(parse_provider(entry))
            except ValueError as exc:
                raise ConfigError(f"prompting.providers[{i}]: {exc}") from None
        return tuple(out)

    def vector_spec(self) -> VectorSpec | None:
        if not self.vector:
            return None
        try:
            return parse_vector(self.vector)
        except ValueError as exc:
            raise ConfigError(f"prompting.vector: {exc}") from None

    def stability_who(self) -> tuple[str, ...]:
        """Who exp2 runs with: provider labels and/or "vector"."""
        if "stability" not in self.experiments:
            return ()
        if self.stability_with:
            return self.stability_with
        return (*(p.label for p in self.provider_specs()), *((VECTOR,) if self.vector else ()))


@dataclass(frozen=True)
class Config:
    """A whole workspace configuration."""

    behavior: str = "relationship-seeking"  # data/<behavior>/, rubrics/<behavior>.toml
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # prepended to every conversation (training, generation, chat)
    seed: int = 0  # workspace-wide seed for anything not seeded by its own section
    models: tuple[ModelSpec, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    prices: dict[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    prompting: PromptingConfig = field(default_factory=PromptingConfig)

    def __post_init__(self) -> None:
        _require(bool(self.behavior.strip()), "behavior", "must not be empty")
        _require("/" not in self.behavior and ".." not in self.behavior, "behavior", "must be a plain name")
        names = [m.name for m in self.models]
        _require(len(set(names)) == len(names), "models", "a model is listed twice")
        for epoch in self.generate.epochs:
            _require(
                epoch <= self.train.epochs,
                "generate.epochs",
                f"epoch {epoch} is above train.epochs = {self.train.epochs}",
            )
        for model in self.models:
            for epoch in model.eval_epochs:
                _require(
                    epoch <= self.train.epochs,
                    f"models[{model.name}].eval_epochs",
                    f"epoch {epoch} is above train.epochs = {self.train.epochs}",
                )

    def eval_epochs(self, model: ModelSpec) -> tuple[int, ...]:
        """Epochs whose vectors are generated from and scored for `model`."""
        return model.eval_epochs or self.generate.epochs or (self.train.epochs,)

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if name in (spec.name, spec.short):
                return spec
        raise ConfigError(f"models: {name!r} is not in steertui.toml; add a [[models]] entry or pass --model")
