"""The in-process engine: transformers model, adapter slots, and a continuous-batching decode loop.

One loop thread owns the model. Between decode steps it admits queued requests (prefilled together, left-padded,
each with its own adapter, then joined to the running batch), writes adapters into slots, and drops finished or
cancelled rows. Each row keeps the adapter it was accepted with, even if that adapter is unloaded or replaced
meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.energy import EnergyMeter, open_meter
from common.models import check_model_dir, model_fingerprint, model_name
from serve.engine.adapter_files import AdapterWeights, read_adapter
from serve.engine.detok import IncrementalDecoder, find_stop
from serve.engine.kv_batch import BatchCache, attention_masks, left_padded
from serve.engine.lora_slots import BatchContext, lora_dtype_for, wrap_linear_layers
from serve.engine.quantize import quantize_model
from serve.engine.sampling import choose, process_logits
from serve.engine.slots import SlotTable
from serve.engine.types import GenerationRequest, GenerationResult, Timings, Token
from serve.errors import AdapterNotFound, GenerationFailed, InvalidRequest, Overloaded, Unavailable

log = logging.getLogger("supportkit.engine")


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16
    # bf16 on CPUs with native bf16 instructions (1.5-2.7x faster than fp32 here), else fp32.
    native = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return torch.bfloat16 if "AVX512" in native.upper() or "AMX" in native.upper() else torch.float32


def _failure(exc: Exception) -> GenerationFailed:
    return GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")


class _Handle:
    """Where the loop thread sends a request's events: an asyncio queue on the caller's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    def emit(self, event) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


@dataclass
class _Row:
    req: GenerationRequest
    handle: _Handle
    weights: AdapterWeights | None
    prompt_ids: list[int]
    arrival: float
    slot: int = 0
    decoder: IncrementalDecoder | None = None
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
    finish_reason: str | None = None


class LocalEngine:
    def __init__(
        self, model_dir: Path, dtype: str = "auto", device: str = "auto", max_batch_size: int = 8,
        max_queue: int = 64, max_adapters: int = 8, max_lora_rank: int = 32, max_input_tokens: int = 2048,
        max_total_tokens: int = 4096, prefill_tokens: int = 4096, meter: EnergyMeter | None = None,
        weights: str = "bf16",
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from common.chat_template import KIT_CHAT_TEMPLATE

        self.model_dir = check_model_dir(model_dir)
        self.name = model_name(self.model_dir)
        self.fingerprint = model_fingerprint(self.model_dir)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if not self.tokenizer.chat_template:
            self.tokenizer.chat_template = KIT_CHAT_TEMPLATE
        model = AutoModelForCausalLM.from_pretrained(
            self.model_dir, dtype=self.dtype, use_safetensors=True, attn_implementation="sdpa"
        ).to(self.device)
        model.eval()
        # Frozen bf16 weights (requires_grad=False) hit a 4-5x slower CPU path at batch 8; inference_mode
        # keeps autograd off either way.
        for p in model.parameters():
            p.requires_grad_(True)
        self.model = model
        text_config = model.config.get_text_config()
        self.window = getattr(text_config, "sliding_window", None)
        self.by_type = "sliding_attention" in (getattr(text_config, "layer_types", None) or [])
        self.max_context = getattr(text_config, "max_position_embeddings", None) or max_total_tokens
        self.max_total_tokens = min(max_total_tokens, self.max_context)
        self.max_input_tokens = min(max_input_tokens, self.max_total_tokens - 1)
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.prefill_tokens = prefill_tokens  # padded tokens per joint prefill: bounds its activation memory
        self.max_lora_rank = max_lora_rank
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.special_ids = set(self.tokenizer.all_special_ids)

        self.ctx = BatchContext()
        self.layers = wrap_linear_layers(
            model, self.ctx, max_adapters + 1, max_lora_rank, lora_dtype_for(self.dtype, self.device)
        )
        self.layer_shapes = {n: (m.in_features, m.out_features) for n, m in self.layers.items()}
        self.quantization = quantize_model(model, weights, self.device)
        self.slots = SlotTable(self.layers, max_adapters + 1)

        self.meter = meter or open_meter(self.device)
        self._last_energy = self._first_energy = self.meter.joules()
        self.idle_joules = 0.0
        self._adapters: dict[str, AdapterWeights] = {}
        self._lock = threading.Lock()
        self._pending: collections.deque[_Row] = collections.deque()
        self._warm: collections.deque[AdapterWeights] = collections.deque()
        self._rows: list[_Row] = []
        self._batch = BatchCache()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.on_finish = None  # callback(result, row-level info) for metrics

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
        with self._lock:
            waiting = [r.weights.name for r in self._pending if r.weights]
        running = [r.weights.name for r in list(self._rows) if r.weights]
        return {
            "queue_size": len(self._pending), "batch_size": len(self._rows), "idle_joules": self.idle_joules,
            "energy_source": self.meter.source, "running_adapters": sorted(set(running)),
            "waiting_adapters": sorted(set(waiting)), "resident_adapters": self.slots.resident(),
            "max_adapters": len(self.slots.held) - 1,
        }

    def metered_joules(self) -> float:
        """The meter's total over the window that requests and idle time have been charged for."""
        return self._last_energy - self._first_energy

    # ---- adapters ------------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: Path) -> AdapterWeights:
        """Read and validate (in the caller's thread), then publish; the loop thread slots it in between steps."""
        weights = read_adapter(path, name, self.layer_shapes, self.max_lora_rank, self.fingerprint)
        with self._lock:
            self._adapters[name] = weights
            self._warm.append(weights)
        self._wake.set()
        return weights

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if self._adapters.pop(name, None) is None:
                raise AdapterNotFound(f"adapter {name!r} is not loaded")
        self._wake.set()

    # ---- prompts ---------------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict], chat_template: str | None = None) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ---- requests --------------------------------------------------------------------------------------
    def _accept(self, req: GenerationRequest) -> _Row:
        if not self.health():
            raise Unavailable("the engine is not running")
        weights = None
        if req.adapter:
            weights = self.adapters().get(req.adapter)
            if weights is None:
                raise AdapterNotFound(
                    f"adapter {req.adapter!r} is not loaded; GET /v1/models lists the adapters being served"
                )
        if len(self._pending) >= self.max_queue:  # cheap refusal before tokenizing
            raise Overloaded("the request queue is full; retry later")
        ids = self.tokenizer(req.prompt, add_special_tokens=False)["input_ids"]
        p = req.params
        if p.truncate:
            ids = ids[-p.truncate :]
        if not ids:
            raise InvalidRequest("the prompt is empty", param="inputs")
        if len(ids) > self.max_input_tokens:
            raise InvalidRequest(
                f"inputs must have less than {self.max_input_tokens} tokens. Given: {len(ids)}", param="inputs"
            )
        if len(ids) + p.max_new_tokens > self.max_total_tokens:
            raise InvalidRequest(
                f"inputs tokens + max_new_tokens must be <= {self.max_total_tokens}. "
                f"Given: {len(ids)} inputs tokens and {p.max_new_tokens} max_new_tokens", param="max_new_tokens",
            )
        handle = _Handle(asyncio.get_running_loop())
        row = _Row(req=req, handle=handle, weights=weights, prompt_ids=ids, arrival=time.monotonic())
        with self._lock:
            if len(self._pending) >= self.max_queue:
                raise Overloaded("the request queue is full; retry later")
            self._pending.append(row)
        self._wake.set()
        return row

    async def stream(self, req: GenerationRequest):
        """Yield Token events as they are produced, then one GenerationResult."""
        row = self._accept(req)
        done = False
        try:
            while True:
                event = await row.handle.queue.get()
                if isinstance(event, Exception):
                    done = True
                    raise event
                yield event
                if isinstance(event, GenerationResult):
                    done = True
                    return
        finally:
            if not done:  # the client went away: free its place in the batch
                row.handle.cancelled = True
                self._wake.set()

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        async for event in self.stream(req):
            if isinstance(event, GenerationResult):
                return event
        raise GenerationFailed("generation ended without a result")

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
        while self._warm:
            self.slots.warm(self._warm.popleft())
        self._admit()
        self._drop_cancelled()
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
        while len(self._rows) + len(rows) < self.max_batch_size:
            with self._lock:
                row = self._next_admissible()
            if row is None:
                break
            if row.handle.cancelled:
                self.slots.release(row.slot, self._registered(row))
                continue
            rows.append(row)
        for group in self._prefill_groups(rows):
            try:
                self._prefill(group)
            except Exception as exc:
                log.exception("prefill failed")
                for row in group:
                    self.slots.release(row.slot, self._registered(row))
                    row.handle.emit(_failure(exc))

    def _prefill_groups(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows prefilled in one forward pass: in arrival order while the padded size stays within the token
        budget; a row that wants every prompt token's logits (decoder_input_details) goes alone."""
        groups: list[list[_Row]] = []
        for row in rows:
            last = groups[-1] if groups else None
            if (last and not row.req.params.decoder_input_details
                    and not last[0].req.params.decoder_input_details
                    and (len(last) + 1) * max(len(r.prompt_ids) for r in [*last, row]) <= self.prefill_tokens):
                last.append(row)
            else:
                groups.append([row])
        return groups

    def _next_admissible(self) -> _Row | None:
        """The oldest queued request whose adapter can get a slot now (others keep waiting)."""
        for row in list(self._pending):
            slot = self.slots.acquire(row.weights)
            if slot is not None:
                self._pending.remove(row)
                row.slot = slot
                return row
        return None

    def _registered(self, row: _Row) -> bool:
        return row.weights is not None and self.adapters().get(row.weights.name) is row.weights

    def _prefill(self, rows: list[_Row]) -> None:
        from transformers import DynamicCache

        now = time.monotonic()
        for row in rows:
            row.admitted = now
            p = row.req.params
            if p.sampling:
                row.seed = p.seed if p.seed is not None else random.randrange(2**63)
                row.generator = torch.Generator(device=self.device).manual_seed(row.seed)
            row.decoder = IncrementalDecoder(self.tokenizer)
            row.next_pos = len(row.prompt_ids)
        details = rows[0].req.params.decoder_input_details  # such a row is always prefilled alone
        ids, pos, valid = left_padded([r.prompt_ids for r in rows], self.device)
        masks = attention_masks(pos, pos, valid, self.window, self.by_type)
        self.ctx.set([r.slot for r in rows], self.device)
        cache = DynamicCache()
        out = self.model(
            input_ids=ids, position_ids=pos, attention_mask=masks, cache=cache, use_cache=True,
            logits_to_keep=0 if details else 1,
        )
        if details:
            rows[0].prefill = self._prefill_details(rows[0].prompt_ids, out.logits[0].float())
        self._batch.append_rows(cache, pos, valid)
        self._rows.extend(rows)
        self._account({id(r): len(r.prompt_ids) for r in rows}, "prefill")
        logits = out.logits[:, -1].float()
        for i, row in enumerate(rows):
            self._emit_or_fail(row, logits[i])
        self._finish_done()

    def _prefill_details(self, ids: list[int], logits: torch.Tensor) -> list[Token]:
        logprobs = logits.log_softmax(-1)
        tokens = [Token(ids[0], self.tokenizer.decode([ids[0]]), None, ids[0] in self.special_ids)]
        for i, tid in enumerate(ids[1:]):
            tokens.append(Token(tid, self.tokenizer.decode([tid]), float(logprobs[i, tid]), tid in self.special_ids))
        return tokens

    def _decode_step(self) -> None:
        rows = self._rows
        input_ids = torch.tensor([[r.last_token] for r in rows], device=self.device)
        next_pos = torch.tensor([r.next_pos for r in rows], device=self.device)
        k_pos, k_valid = self._batch.step_inputs(next_pos)
        masks = attention_masks(next_pos[:, None], k_pos, k_valid, self.window, self.by_type)
        self.ctx.set([r.slot for r in rows], self.device)
        out = self.model(
            input_ids=input_ids, position_ids=next_pos[:, None], attention_mask=masks, cache=self._batch.cache,
            use_cache=True, logits_to_keep=1,
        )
        self._batch.commit_step(k_pos, k_valid)
        self._account({id(r): 1 for r in rows}, "decode")
        logits = out.logits[:, -1].float()
        for i, row in enumerate(rows):
            row.next_pos += 1
            self._emit_or_fail(row, logits[i])
        self._finish_done()

    def _emit_or_fail(self, row: _Row, logits: torch.Tensor) -> None:
        """A row whose sampling fails (e.g. non-finite logits) fails alone; the rest of the batch goes on."""
        try:
            self._emit_token(row, logits)
        except Exception as exc:
            log.warning("request %s failed: %s", row.req.id, exc)
            row.finish_reason = "error"
            row.handle.emit(_failure(exc))

    def _emit_token(self, row: _Row, logits: torch.Tensor) -> None:
        p = row.req.params
        generated = [t.id for t in row.tokens]
        if p.repetition_penalty or p.frequency_penalty or p.presence_penalty or p.sampling:
            context = torch.tensor(row.prompt_ids + generated, device=logits.device)
            logits = process_logits(logits, p, context, generated)
        token_id = choose(logits, p, row.generator)
        if not row.tokens:
            row.first_token = time.monotonic()
        logprob, top = None, None
        if p.logprobs or p.top_n_tokens:
            logprobs = logits.log_softmax(-1)
            logprob = float(logprobs[token_id])
            if p.top_n_tokens:
                values, ids = logprobs.topk(p.top_n_tokens)
                top = [Token(int(t), self.tokenizer.decode([int(t)]), float(v), int(t) in self.special_ids)
                       for v, t in zip(values, ids)]
        row.last_token = token_id
        special = token_id in self.special_ids
        before = len(row.text)
        delta = row.decoder.push(token_id)
        row.text += delta
        if token_id in self.eos_ids and not p.ignore_eos:
            row.finish_reason = "eos_token"
        elif p.stop and (cut := find_stop(row.text, before, p.stop)) is not None:
            row.text = row.text[:cut]
            delta = row.text[before:]
            row.finish_reason = "stop_sequence"
        elif len(row.tokens) + 1 >= p.max_new_tokens or row.next_pos + 1 >= self.max_total_tokens:
            row.finish_reason = "length"
        if row.finish_reason and row.finish_reason != "stop_sequence":
            tail = row.decoder.flush()
            row.text += tail
            delta += tail
        token = Token(token_id, delta, logprob, special, top, last=row.finish_reason is not None)
        row.tokens.append(token)
        row.handle.emit(token)

    def _finish_done(self) -> None:
        done = [r for r in self._rows if r.finish_reason]
        if not done:
            return
        keep = [i for i, r in enumerate(self._rows) if not r.finish_reason]
        self._rows = [self._rows[i] for i in keep]
        self._batch.keep_rows(keep)
        now = time.monotonic()
        for row in done:
            self.slots.release(row.slot, self._registered(row))
            if row.finish_reason == "error":  # its error has been sent already
                continue
            result = GenerationResult(
                text=row.text, finish_reason=row.finish_reason, tokens=row.tokens, prompt_tokens=len(row.prompt_ids),
                seed=row.seed, prefill=row.prefill, adapter=row.weights.name if row.weights else None,
                timings=Timings(
                    queue_s=row.admitted - row.arrival, first_token_s=row.first_token - row.arrival,
                    inference_s=now - row.admitted, total_s=now - row.arrival,
                ),
                energy_joules=row.energy["prefill"] + row.energy["decode"], energy_source=self.meter.source,
                energy_by_phase=dict(row.energy),
            )
            if self.on_finish:
                self.on_finish(result)
            row.handle.emit(result)

    def _drop_cancelled(self) -> None:
        for row in self._rows:
            if row.handle.cancelled and not row.finish_reason:
                row.finish_reason = "cancelled"
        with self._lock:
            for row in [r for r in self._pending if r.handle.cancelled]:
                self._pending.remove(row)  # queued rows hold no slot yet
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
        self._batch = BatchCache()
        for row in rows:
            self.slots.release(row.slot, self._registered(row))
            row.handle.emit(error)
