"""Adapter slots: every adapter's LoRA weights live in pre-allocated stacked tensors, one slot each.

Each linear layer of the base model is wrapped once at start-up. Loading an adapter copies its A/B matrices
into a free slot (no module re-wrapping, so it takes milliseconds); a forward pass applies each row's own
adapter: one matmul pair when the whole batch uses one slot, else a gather of the rows' slots and batched
matmuls (the Punica / S-LoRA idea in plain PyTorch). Slot 0 is the base model: all zeros, never written.
Buffers are allocated per layer on first use, so q,v-only adapters cost no memory in the MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchContext:
    """Which slot each row of the current forward pass uses; set by the engine before every forward."""

    def __init__(self):
        self.slot_ids: torch.Tensor | None = None  # [B] long
        self.single_slot: int | None = None  # all rows use this slot
        self.active: frozenset[int] = frozenset()

    def set(self, slots: list[int], device) -> None:
        self.active = frozenset(s for s in slots if s)
        self.single_slot = slots[0] if len(set(slots)) == 1 else None
        self.slot_ids = torch.tensor(slots, dtype=torch.long, device=device)


class MultiLoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, ctx: BatchContext, num_slots: int, max_rank: int):
        super().__init__()
        self.base = base
        self.ctx = ctx
        self.num_slots, self.max_rank = num_slots, max_rank
        self.in_features, self.out_features = base.in_features, base.out_features
        self.lora_A: torch.Tensor | None = None  # [S, R, in]
        self.lora_B: torch.Tensor | None = None  # [S, out, R]
        self.scaling = torch.zeros(num_slots)
        self.scale_f = [0.0] * num_slots
        self.ranks = [0] * num_slots
        self.present: set[int] = set()

    def _allocate(self) -> None:
        w = self.base.weight
        self.lora_A = torch.zeros(self.num_slots, self.max_rank, self.in_features, dtype=w.dtype, device=w.device)
        self.lora_B = torch.zeros(self.num_slots, self.out_features, self.max_rank, dtype=w.dtype, device=w.device)
        self.scaling = self.scaling.to(device=w.device)  # fp32: a bf16 scaling would round alpha / r

    def write_slot(self, slot: int, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        if self.lora_A is None:
            self._allocate()
        r = a.shape[0]
        self.lora_A[slot].zero_()
        self.lora_B[slot].zero_()
        self.lora_A[slot, :r].copy_(a)
        self.lora_B[slot, :, :r].copy_(b)
        self.scaling[slot] = scaling
        self.scale_f[slot] = scaling
        self.ranks[slot] = r
        self.present.add(slot)

    def clear_slot(self, slot: int) -> None:
        if slot in self.present:
            self.lora_A[slot].zero_()
            self.lora_B[slot].zero_()
            self.scaling[slot] = 0
            self.scale_f[slot] = 0.0
            self.ranks[slot] = 0
            self.present.discard(slot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        ctx = self.ctx
        if not (ctx.active and self.present) or ctx.active.isdisjoint(self.present):
            return y
        s = ctx.single_slot
        if s is not None:
            r = self.ranks[s]
            # Same operations, in the same order, as peft's LoRA layer: exact in fp32.
            return y + F.linear(F.linear(x, self.lora_A[s, :r]), self.lora_B[s, :, :r]) * self.scale_f[s]
        idx = ctx.slot_ids
        xa = torch.bmm(x, self.lora_A[idx].transpose(1, 2))
        return y + torch.bmm(xa, self.lora_B[idx].transpose(1, 2)) * self.scaling[idx].view(-1, 1, 1).to(x.dtype)


def wrap_linear_layers(model: nn.Module, ctx: BatchContext, num_slots: int, max_rank: int) -> dict[str, MultiLoraLinear]:
    """Wrap every nn.Linear inside the decoder (not lm_head); returns them by their module name."""
    wrapped: dict[str, MultiLoraLinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and ".layers." in f".{full}":
                layer = MultiLoraLinear(child, ctx, num_slots, max_rank)
                setattr(module, child_name, layer)
                wrapped[full] = layer
    return wrapped
