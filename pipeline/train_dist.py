"""Single-process and multi-GPU (FSDP2) plumbing for the trainer.

Launched by `accelerate launch --config_file pipeline/accelerate_fsdp.yaml -m pipeline.train ...` (or
torchrun), each rank holds a shard of every decoder layer (`fully_shard`), while the steering vector
is a small replicated parameter whose gradient is all-reduced by hand. Only the vector trains, so
saving never needs the sharded model state: rank 0 writes the whole vector at any world size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def device(self, requested: str) -> str:
        if self.enabled and requested.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    def all_reduce_mean(self, tensor: torch.Tensor) -> None:
        if self.enabled:
            self.all_reduce_sum(tensor)
            tensor /= self.world

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place; CPU tensors travel through the GPU when the backend is NCCL (GPU-only)."""
        if not self.enabled:
            return tensor
        if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
            staged = tensor.to(f"cuda:{self.local_rank}")
            dist.all_reduce(staged, op=dist.ReduceOp.SUM)
            tensor.copy_(staged.cpu())
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_dist(device: str) -> Dist:
    """Join the process group when launched with several ranks (env from accelerate/torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local)


def shard_model(model: Any, layers: Any, device: str) -> None:
    """FSDP2: one shard group per decoder layer, and one for the root's own weights (embeddings, norm, head).

    The root group is unsharded once and kept so, since the split forward calls the embedding, final norm
    and head directly; they are frozen, so this costs memory for one copy of them and no communication.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (dist.get_world_size(),))
    for block in layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def load_sharded(name: str, dtype: str, device: str, d: Dist) -> Any:
    """Load a model across ranks without a full copy per rank: rank 0 reads the weights, the others
    build it on the meta device; after sharding, rank 0's tensors are broadcast shard by shard."""
    import transformers
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from pipeline.models import LoadedModel, decoder_layers, local_model_dir, pick_dtype, quiet_transformers

    quiet_transformers()
    source = str(local_model_dir(name) or name)
    torch_dtype = pick_dtype(dtype, device)
    config = transformers.AutoConfig.from_pretrained(source)
    tok = transformers.AutoTokenizer.from_pretrained(source)
    full: dict[str, Any] = {}
    if d.main:
        full = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype).state_dict()
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    shard_model(model, decoder_layers(model), device)
    model.to_empty(device=device)
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(config=config).to(device)  # non-persistent buffers: rebuild
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    model.eval()
    model.requires_grad_(False)
    model.unshard()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(name=name, model=model, tokenizer=tok, device=device, dtype=torch_dtype)


def shard_rows(items: list[Any], d: Dist) -> list[Any]:
    """This rank's share (round-robin), so ranks see disjoint rows."""
    return items[d.rank :: d.world] if d.enabled else items
