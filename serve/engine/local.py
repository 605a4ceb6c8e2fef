"""The in-process engine: transformers model, adapter slots, and a continuous-batching decode loop.

One loop thread owns the model. Between decode steps it admits queued requests (prefilled together, left-padded,
each with its own adapter, then joined to the running batch), writes adapters into slots, and drops finished,
cancelled or expired rows. Each row keeps the adapter it was accepted with, even if that adapter is unloaded or
replaced meanwhile. The parts, after vLLM's: `scheduler` (queue and admission), `runner` (forward passes),
`output` (sampling, stop rules, detokenizing, results), `prefix_cache` (the keys and values of earlier prompts
and replies, reused by the next turn of a chat); `device` picks dtype and device and loads the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import torch

from common.energy import EnergyMeter, open_meter
from common.models import check_model_dir, model_fingerprint, model_name
from serve.engine.adapter_files import AdapterWeights, read_adapter
from serve.engine.device import load_model, pick_device, pick_dtype
from serve.engine.generation import Generation
from serve.engine.interface import Engine
from serve.engine.lora_slots import BatchContext, lora_dtype_for, wrap_linear_layers
from serve.engine.output import OutputProcessor
from serve.engine.prefix_cache import BASE_MODEL, PrefixCache, past_of
from serve.engine.prompts import PromptFormat, check_lengths
from serve.engine.quantize import quantize_model
from serve.engine.runner import ModelRunner
from serve.engine.scheduler import Handle, Row, Scheduler
from serve.engine.slots import SlotTable
from serve.engine.types import GenerationRequest
from serve.errors import AdapterNotFound, GenerationFailed, Overloaded, Timeout, Unavailable

log = logging.getLogger("supportkit.engine")
__all__ = ["LocalEngine", "pick_dtype"]


def _failure(exc: Exception) -> GenerationFailed:
    return GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")


class LocalEngine(Engine):
    def __init__(
        self, model_dir: Path, dtype: str = "auto", device: str = "auto", max_batch_size: int = 8,
        max_queue: int = 64, max_adapters: int = 8, max_lora_rank: int = 32, max_input_tokens: int = 2048,
        max_total_tokens: int = 4096, prefill_tokens: int = 4096, meter: EnergyMeter | None = None,
        weights: str = "bf16", prefix_cache_mb: int = 512,
    ):
        self.model_dir = check_model_dir(model_dir)
        self.name = model_name(self.model_dir)
        self.fingerprint = model_fingerprint(self.model_dir)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.prompts = PromptFormat(self.model_dir)
        self.tokenizer = self.prompts.tokenizer
        self.model = model = load_model(self.model_dir, self.dtype, self.device)
        text_config = model.config.get_text_config()
        self.max_context = getattr(text_config, "max_position_embeddings", None) or max_total_tokens
        self.max_total_tokens = min(max_total_tokens, self.max_context)
        self.max_input_tokens = min(max_input_tokens, self.max_total_tokens - 1)
        self.max_lora_rank = max_lora_rank
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)

        self.ctx = BatchContext()
        self.layers = wrap_linear_layers(
            model, self.ctx, max_adapters + 1, max_lora_rank, lora_dtype_for(self.dtype, self.device)
        )
        self.layer_shapes = {n: (m.in_features, m.out_features) for n, m in self.layers.items()}
        self.quantization = quantize_model(model, weights, self.device)
        self.slots = SlotTable(self.layers, max_adapters + 1)
        self.scheduler = Scheduler(self.slots, max_batch_size, max_queue, prefill_tokens)
        self.runner = ModelRunner(model, self.ctx, self.device)
        self.output = OutputProcessor(self.tokenizer, eos_ids, self.max_total_tokens, self.device)
        self.prefix = PrefixCache(prefix_cache_mb * 2**20)  # owned by the loop thread

        self.meter = meter or open_meter(self.device)
        self._last_energy = self._first_energy = self.meter.joules()
        self.idle_joules = 0.0
        self._adapters: dict[str, AdapterWeights] = {}
        self._lock = threading.Lock()
        self._warm: list[AdapterWeights] = []
        self._retired: list[AdapterWeights] = []  # unloaded or replaced: their cached prefixes go
        self._rows: list[Row] = []
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.on_finish = None  # callback(result) for metrics

    @property
    def eos_ids(self) -> set[int]:
        return self.output.eos_ids

    @property
    def prefill_tokens(self) -> int:
        return self.scheduler.prefill_tokens

    @prefill_tokens.setter
    def prefill_tokens(self, value: int) -> None:
        self.scheduler.prefill_tokens = value

    def _prefill_groups(self, rows):
        return self.scheduler.prefill_groups(rows)

    # ---- lifecycle and state -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="supportkit-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    def health(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop

    def adapters(self) -> dict[str, AdapterWeights]:
        with self._lock:
            return dict(self._adapters)

    def stats(self) -> dict:
        running = [r.weights.name for r in list(self._rows) if r.weights]
        return {
            "queue_size": len(self.scheduler.pending), "batch_size": len(self._rows), "idle_joules": self.idle_joules,
            "energy_source": self.meter.source, "running_adapters": sorted(set(running)),
            "waiting_adapters": sorted(set(self.scheduler.waiting_adapters())), "resident_adapters": self.slots.resident(),
            "max_adapters": len(self.slots.held) - 1, "prefix_cache": self.prefix.stats(),
        }

    def metered_joules(self) -> float:
        """The meter's total over the window that requests and idle time have been charged for."""
        return self._last_energy - self._first_energy

    # ---- adapters ------------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: Path) -> AdapterWeights:
        """Read and validate (in the caller's thread), then publish; the loop thread slots it in between steps."""
        weights = read_adapter(path, name, self.layer_shapes, self.max_lora_rank, self.fingerprint)
        with self._lock:
            if (old := self._adapters.get(name)) is not None:
                self._retired.append(old)
            self._adapters[name] = weights
            self._warm.append(weights)
        self._wake.set()
        return weights

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if (old := self._adapters.pop(name, None)) is None:
                raise AdapterNotFound(f"adapter {name!r} is not loaded")
            self._retired.append(old)
        self._wake.set()

    # ---- prompts ---------------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict], chat_template: str | None = None) -> str:
        return self.prompts.render_chat(messages, chat_template)

    def count_tokens(self, text: str) -> int:
        return self.prompts.count_tokens(text)

    # ---- requests --------------------------------------------------------------------------------------
    def prepare_grammar(self, grammar) -> None:
        self.output.grammars.compile(grammar)

    def submit(self, req: GenerationRequest, timeout_s: float | None = None) -> Generation:
        """Validate, resolve the adapter and queue the request, or raise why not (before any answer starts)."""
        if not self.health():
            raise Unavailable("the engine is not running")
        weights = None
        if req.adapter:
            weights = self.adapters().get(req.adapter)
            if weights is None:
                raise AdapterNotFound(
                    f"adapter {req.adapter!r} is not loaded; GET /v1/models lists the adapters being served"
                )
        if self.scheduler.full():  # cheap refusal before tokenizing
            raise Overloaded("the request queue is full; retry later")
        ids = self.prompts.encode(req.prompt)
        if req.params.truncate:
            ids = ids[-req.params.truncate :]
        check_lengths(len(ids), req.params, self.max_input_tokens, self.max_total_tokens)
        now = time.monotonic()
        handle = Handle(asyncio.get_running_loop())
        row = Row(req=req, handle=handle, weights=weights, prompt_ids=ids, arrival=now,
                  deadline=now + timeout_s if timeout_s else None)
        self.scheduler.enqueue(row)
        self._wake.set()
        return Generation(self._events(handle), cancel=lambda: self._cancel(handle))

    def _cancel(self, handle: Handle) -> None:
        handle.cancelled = True
        self._wake.set()

    @staticmethod
    async def _events(handle: Handle):
        while True:
            event = await handle.queue.get()
            if isinstance(event, Exception):
                raise event
            yield event

    # ---- the loop thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        with torch.inference_mode():
            while not self._stop:
                try:
                    self._tick()
                except Exception as exc:  # a failed step fails its rows, never the engine
                    log.exception("engine step failed")
                    self._fail_all(_failure(exc))

    def _tick(self) -> None:
        with self._lock:
            warm, self._warm = self._warm, []
            retired, self._retired = self._retired, []
        for weights in retired:
            self.prefix.drop(weights.uid)
        for weights in warm:
            self.slots.warm(weights)
        self._drop_gone()
        self._admit()
        if not self._rows:
            self._wake.wait(0.05)
            self._wake.clear()
            now = self.meter.joules()
            self.idle_joules += now - self._last_energy
            self._last_energy = now
            return
        self._decode_step()

    def _admit(self) -> None:
        rows = []
        for row in self.scheduler.admit(len(self._rows)):
            if row.handle.cancelled:
                self.slots.release(row.slot, self._registered(row))
                continue
            self._match_prefix(row)
            rows.append(row)
        for group in self.scheduler.prefill_groups(rows):
            try:
                self._prefill(group)
            except Exception as exc:
                log.exception("prefill failed")
                for row in group:
                    self.slots.release(row.slot, self._registered(row))
                    row.handle.emit(_failure(exc))

    def _registered(self, row: Row) -> bool:
        return row.weights is not None and self.adapters().get(row.weights.name) is row.weights

    @staticmethod
    def _adapter_key(row: Row) -> int:
        return row.weights.uid if row.weights else BASE_MODEL

    def _match_prefix(self, row: Row) -> None:
        """The longest cached prefix of the row's prompt, leaving at least its last token to compute (whose
        logits give the first new token); none for a row that wants every prompt token's logits."""
        if row.req.params.decoder_input_details:
            return
        row.cached = self.prefix.match(self._adapter_key(row), row.prompt_ids, len(row.prompt_ids) - 1)
        row.cached_tokens = len(row.cached) * self.prefix.block_size

    def _remember(self, index: int, row: Row) -> None:
        """Put a finished row's prompt and generated tokens (those whose keys and values are in the batch's
        cache) into the prefix cache, unless its adapter has been unloaded or replaced meanwhile."""
        if row.weights is not None and not self._registered(row):
            return
        ids = (row.prompt_ids + [t.id for t in row.tokens])[:row.next_pos]
        self.prefix.insert(self._adapter_key(row), ids, self.runner.row_kv(index))

    def _prefill(self, rows: list[Row]) -> None:
        now = time.monotonic()
        for row in rows:
            row.admitted = now
            self.output.start(row)
        details = rows[0].req.params.decoder_input_details  # such a row is always prefilled alone
        pasts = [past_of(r.cached) for r in rows]
        for row in rows:
            row.cached = []  # the blocks' tensors are joined into `pasts`; the row need not hold them
        logits = self.runner.prefill([r.prompt_ids for r in rows], [r.slot for r in rows],
                                     [r.cached_tokens for r in rows], pasts, all_logits=details)
        if details:
            rows[0].prefill = self.output.prefill_details(rows[0].prompt_ids, logits[0])
            logits = logits[:, -1]
        self._rows.extend(rows)
        self._account({id(r): len(r.prompt_ids) - r.cached_tokens for r in rows}, "prefill")
        for i, row in enumerate(rows):
            self._emit_or_fail(row, logits[i])
        self._finish_done()

    def _decode_step(self) -> None:
        rows = self._rows
        logits = self.runner.decode([r.last_token for r in rows], [r.next_pos for r in rows], [r.slot for r in rows])
        self._account({id(r): 1 for r in rows}, "decode")
        for i, row in enumerate(rows):
            row.next_pos += 1
            self._emit_or_fail(row, logits[i])
        self._finish_done()

    def _emit_or_fail(self, row: Row, logits: torch.Tensor) -> None:
        """A row whose sampling fails (e.g. non-finite logits) fails alone; the rest of the batch goes on."""
        try:
            row.handle.emit(self.output.next_token(row, logits))
        except Exception as exc:
            log.warning("request %s failed: %s", row.req.id, exc)
            row.finish_reason = "error"
            row.handle.emit(_failure(exc))

    def _finish_done(self) -> None:
        done = [r for r in self._rows if r.finish_reason]
        if not done:
            return
        keep = [i for i, r in enumerate(self._rows) if not r.finish_reason]
        for i, row in enumerate(self._rows):
            if row.finish_reason and row.finish_reason != "error":
                try:
                    self._remember(i, row)
                except Exception:  # a later cache miss, never a failed request
                    log.exception("prefix cache: could not keep request %s", row.req.id)
        self._rows = [self._rows[i] for i in keep]
        self.runner.keep_rows(keep)
        now = time.monotonic()
        for row in done:
            self.slots.release(row.slot, self._registered(row))
            if row.finish_reason == "error":  # its error has been sent already
                continue
            timed_out = row.finish_reason == "timeout"
            if timed_out:
                row.finish_reason = "cancelled"  # counted as cut short, as a client that leaves
            result = self.output.result(row, now, self.meter.source)
            result.cached_tokens = row.cached_tokens if self.prefix.enabled else None
            if self.on_finish:
                self.on_finish(result)
            row.handle.emit(self._timeout(row) if timed_out else result)

    @staticmethod
    def _timeout(row: Row) -> Timeout:
        limit = row.deadline - row.arrival if row.deadline else 0.0
        return Timeout(f"the generation did not finish within {limit:g} s; ask for fewer tokens")

    def _drop_gone(self) -> None:
        """Rows cancelled by their client, or past their deadline, leave the queue or the batch now."""
        for row in self.scheduler.drop_queued():
            if not row.handle.cancelled:
                row.handle.emit(self._timeout(row))
        now = time.monotonic()
        for row in self._rows:
            if not row.finish_reason:
                if row.handle.cancelled:
                    row.finish_reason = "cancelled"
                elif row.expired(now):
                    row.finish_reason = "timeout"
        self._finish_done()

    def _account(self, shares: dict[int, int], phase: str) -> None:
        """Share the energy since the last reading among this step's rows by their tokens in the step."""
        now = self.meter.joules()
        spent, self._last_energy = now - self._last_energy, now
        total = sum(shares.values())
        for row in self._rows:
            if id(row) in shares:
                row.energy[phase] += spent * shares[id(row)] / total

    def _fail_all(self, error: Exception) -> None:
        rows, self._rows = self._rows, []
        self.runner.reset()
        for row in rows:
            self.slots.release(row.slot, self._registered(row))
            row.handle.emit(error)
