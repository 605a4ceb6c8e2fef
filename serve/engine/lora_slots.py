"""Adapter slots: every adapter's LoRA weights live in pre-allocated stacked tensors, one slot each.

Each linear layer of the base model is wrapped once at start-up. Loading an adapter copies its A/B matrices
into a free slot (no module re-wrapping, so it takes milliseconds); a forward pass applies each row's own
adapter: one matmul pair when the whole batch uses one slot, else a gather of the rows' slots and batched
matmuls (the Punica / S-LoRA idea in plain PyTorch), the rows' weights gathered once per batch composition.
Slot 0 is the base model: all zeros, never written.
Buffers are allocated per layer on first use, so q,v-only adapters cost no memory in the MLP.

The LoRA product is computed in `lora_dtype`: float32 on CPU, where bf16 matmuls this small take 3-5x longer
than fp32 ones (kernel set-up dominates), and fp32 is also what peft computes the LoRA branch in.
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
        self.slots: list[int] = []
        self.composition = 0  # changes whenever the rows' slots do: per-row weights gathered for it stay valid

    def set(self, slots: list[int], device) -> None:
        if slots == self.slots:  # consecutive decode steps of an unchanged batch
            return
        self.slots = list(slots)
        self.composition += 1
        self.active = frozenset(s for s in slots if s)
        self.single_slot = slots[0] if len(set(slots)) == 1 else None
        self.slot_ids = torch.tensor(slots, dtype=torch.long, device=device)


# A mixed batch gathers each row's A and B once per batch composition and keeps them while it lasts (decode
# steps of the same rows), up to this many bytes per layer (8 rows at r16 of Gemma 3 270M's widest layer: 1.4 MB);
# beyond it they are gathered at every step, so a large GPU batch never holds gigabytes of copies.
MIXED_ROWS_CACHE_BYTES = 2 << 20


class MultiLoraLinear(nn.Module):
    """A linear layer plus the LoRA weights of every slot: A [S, R, in], and B transposed and pre-scaled
    (B^T * alpha / r) [S, R, out], so that applying an adapter is two small matmuls and an add."""

    def __init__(self, base: nn.Linear, ctx: BatchContext, num_slots: int, max_rank: int, lora_dtype: torch.dtype):
        super().__init__()
        self.base = base
        self.ctx = ctx
        self.lora_dtype = lora_dtype
        self.num_slots, self.max_rank = num_slots, max_rank
        self.in_features, self.out_features = base.in_features, base.out_features
        self.lora_A: torch.Tensor | None = None
        self.lora_BT: torch.Tensor | None = None
        self.ranks = [0] * num_slots
        self.present: set[int] = set()
        self.used_rank = 0  # the largest rank among present slots: mixed batches gather only that much
        self._rows: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (composition, A^T, B^T) per row
        self._views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # slot -> its A, B^T at its rank

    def _allocate(self) -> None:
        dt, dev = self.lora_dtype, self.base.weight.device
        self.lora_A = torch.zeros(self.num_slots, self.max_rank, self.in_features, dtype=dt, device=dev)
        self.lora_BT = torch.zeros(self.num_slots, self.max_rank, self.out_features, dtype=dt, device=dev)

    def write_slot(self, slot: int, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        if self.lora_A is None:
            self._allocate()
        r = a.shape[0]
        self.lora_A[slot].zero_()
        self.lora_BT[slot].zero_()
        self.lora_A[slot, :r].copy_(a)
        # Scaled in fp32, then cast: the same product peft forms when it multiplies by the scaling.
        self.lora_BT[slot, :r].copy_(b.t().float() * scaling)
        self.ranks[slot] = r
        self.present.add(slot)
        self.used_rank = max(self.ranks)
        self._rows = None
        self._views[slot] = (self.lora_A[slot, :r], self.lora_BT[slot, :r])

    def clear_slot(self, slot: int) -> None:
        if slot in self.present:
            self.lora_A[slot].zero_()
            self.lora_BT[slot].zero_()
            self.ranks[slot] = 0
            self.present.discard(slot)
            self.used_rank = max(self.ranks)
            self._rows = None
            del self._views[slot]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        ctx = self.ctx
        if not self.present or ctx.active.isdisjoint(self.present):
            return y
        x = x.to(self.lora_dtype)
        s = ctx.single_slot
        if s is not None:
            a, b_t = self._views[s]
            return y.add_(F.linear(x, a) @ b_t)
        a_t, b_t = self._row_weights(ctx)
        return y.add_(torch.bmm(torch.bmm(x, a_t), b_t))

    def _row_weights(self, ctx: BatchContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's A^T [B, in, r] and B^T [B, r, out], gathered up to the largest rank in use."""
        if self._rows is not None and self._rows[0] == ctx.composition:
            return self._rows[1], self._rows[2]
        rk, idx = self.used_rank, ctx.slot_ids
        a_t, b_t = self.lora_A[idx, :rk].transpose(1, 2), self.lora_BT[idx, :rk]
        size = (a_t.numel() + b_t.numel()) * a_t.element_size()
        self._rows = (ctx.composition, a_t, b_t) if size <= MIXED_ROWS_CACHE_BYTES else None
        return a_t, b_t


def lora_dtype_for(dtype: torch.dtype, device: str) -> torch.dtype:
    return torch.float32 if device == "cpu" else dtype


def wrap_linear_layers(
    model: nn.Module, ctx: BatchContext, num_slots: int, max_rank: int, lora_dtype: torch.dtype
) -> dict[str, MultiLoraLinear]:
    """Wrap every nn.Linear inside the decoder (not lm_head); returns them by their module name."""
    wrapped: dict[str, MultiLoraLinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and ".layers." in f".{full}":
                layer = MultiLoraLinear(child, ctx, num_slots, max_rank, lora_dtype)
                setattr(module, child_name, layer)
                wrapped[full] = layer
    return wrapped
