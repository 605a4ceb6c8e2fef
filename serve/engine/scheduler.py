"""Admission for the local engine: the queue of accepted requests, which of them join the running batch (an adapter
slot for each, in arrival order), how they are grouped for prefill, and which rows have been cancelled or are
past their deadline."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field

import torch

from serve.engine.adapter_files import AdapterWeights
from serve.engine.slots import SlotTable
from serve.engine.types import GenerationRequest, Token
from serve.errors import Overloaded


class Handle:
    """Where the loop thread sends a request's events: an asyncio queue on the caller's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    def emit(self, event) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


@dataclass
class Row:
    """One request, from its acceptance to its result: its adapter is fixed when it is accepted."""

    req: GenerationRequest
    handle: Handle
    weights: AdapterWeights | None
    prompt_ids: list[int]
    arrival: float
    cached: list = field(default_factory=list)  # prefix cache blocks that start the prompt, until prefilled
    cached_tokens: int = 0
    deadline: float | None = None  # time.monotonic() past which the loop drops it with a Timeout
    slot: int = 0
    decoder: object | None = None  # the output processor's incremental detokenizer
    grammar: object | None = None  # the output processor's grammar state (structured output), if any
    generator: torch.Generator | None = None
    seed: int | None = None
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    prefill: list[Token] = field(default_factory=list)
    next_pos: int = 0
    last_token: int = 0
    admitted: float = 0.0
    first_token: float = 0.0
    energy: dict = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0})
    finish_reason: str | None = None  # set once: eos_token | stop_sequence | length | cancelled | timeout | error

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline


class Scheduler:
    def __init__(self, slots: SlotTable, max_batch_size: int, max_queue: int, prefill_tokens: int):
        self.slots = slots
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.prefill_tokens = prefill_tokens  # padded tokens per joint prefill: bounds its activation memory
        self.pending: collections.deque[Row] = collections.deque()
        self.lock = threading.RLock()  # held by whoever must see the queue unchanged (admission, tests)

    def full(self) -> bool:
        return len(self.pending) >= self.max_queue

    def enqueue(self, row: Row) -> None:
        with self.lock:
            if self.full():
                raise Overloaded("the request queue is full; retry later")
            self.pending.append(row)

    def waiting_adapters(self) -> list[str]:
        with self.lock:
            return [r.weights.name for r in self.pending if r.weights]

    def admit(self, running: int) -> list[Row]:
        """Queued rows that join the batch now, each holding its adapter's slot."""
        rows = []
        with self.lock:  # one look at the queue: requests queued together are admitted together
            while running + len(rows) < self.max_batch_size:
                row = self._next_admissible()
                if row is None:
                    break
                rows.append(row)
        return rows

    def _next_admissible(self) -> Row | None:
        """The oldest queued request whose adapter can get a slot now (others keep waiting)."""
        for row in list(self.pending):
            slot = self.slots.acquire(row.weights)
            if slot is not None:
                self.pending.remove(row)
                row.slot = slot
                return row
        return None

    def prefill_groups(self, rows: list[Row]) -> list[list[Row]]:
        """Rows prefilled in one forward pass: in arrival order while the padded size of what they compute (the
        prompt less its cached prefix) stays within the token budget; a row that wants every prompt token's
        logits (decoder_input_details) goes alone."""
        groups: list[list[Row]] = []
        for row in rows:
            last = groups[-1] if groups else None
            computed = max(len(r.prompt_ids) - r.cached_tokens for r in [*last, row]) if last else 0
            if (last and not row.req.params.decoder_input_details
                    and not last[0].req.params.decoder_input_details
                    and (len(last) + 1) * computed <= self.prefill_tokens):
                last.append(row)
            else:
                groups.append([row])
        return groups

    def drop_queued(self) -> list[Row]:
        """Queued rows that were cancelled or whose deadline passed (they hold no slot yet); removed."""
        now = time.monotonic()
        with self.lock:
            gone = [r for r in self.pending if r.handle.cancelled or r.expired(now)]
            for row in gone:
                self.pending.remove(row)
        return gone
