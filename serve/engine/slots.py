"""Which adapter sits in which slot: reference counts for running requests, least-recently-used eviction."""

from __future__ import annotations

import time

from serve.engine.adapter_files import AdapterWeights
from serve.engine.lora_slots import MultiLoraLinear


class SlotTable:
    """Slot 0 is the base model. Only the engine's loop thread calls this (it writes into the model)."""

    def __init__(self, layers: dict[str, MultiLoraLinear], num_slots: int):
        self.layers = layers
        self.held: list[AdapterWeights | None] = [None] * num_slots
        self.refs = [0] * num_slots
        self.used = [0.0] * num_slots

    def slot_of(self, weights: AdapterWeights) -> int | None:
        for i, w in enumerate(self.held):
            if w is weights:
                return i
        return None

    def acquire(self, weights: AdapterWeights | None) -> int | None:
        """The slot holding `weights` (written into a free or idle slot if needed); None if all are busy."""
        if weights is None:
            return 0
        slot = self.slot_of(weights)
        if slot is None:
            slot = self._free_slot(evict=True)
            if slot is None:
                return None
            self._write(slot, weights)
        self.refs[slot] += 1
        self.used[slot] = time.monotonic()
        return slot

    def warm(self, weights: AdapterWeights) -> bool:
        """Put an adapter in a slot ahead of its first request, if a slot is free (never evicts)."""
        if self.slot_of(weights) is not None:
            return True
        slot = self._free_slot(evict=False)
        if slot is not None:
            self._write(slot, weights)
        return slot is not None

    def release(self, slot: int, still_registered: bool) -> None:
        if slot == 0:
            return
        self.refs[slot] -= 1
        if self.refs[slot] == 0 and not still_registered:
            self.clear(slot)

    def clear(self, slot: int) -> None:
        for layer in self.layers.values():
            layer.clear_slot(slot)
        self.held[slot] = None

    def _free_slot(self, evict: bool) -> int | None:
        """An empty slot, else (with `evict`) the least recently used idle one, cleared."""
        for i in range(1, len(self.held)):
            if self.held[i] is None:
                return i
        idle = [i for i in range(1, len(self.held)) if self.refs[i] == 0]
        if not idle or not evict:
            return None
        victim = min(idle, key=lambda i: self.used[i])
        self.clear(victim)
        return victim

    def _write(self, slot: int, weights: AdapterWeights) -> None:
        for module, (a, b, scaling) in weights.layers.items():
            self.layers[module].write_slot(slot, a, b, scaling)
        self.held[slot] = weights

    def resident(self) -> list[str]:
        return [w.name for w in self.held if w is not None]
