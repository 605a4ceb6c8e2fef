"""The remote engine: the Engine interface over an existing TGI, LoRAX or vLLM deployment.

Prompts are rendered here (tokenizer and chat template of `--model DIR`; no weights are loaded), so the chat
service, adapter manifests, registry, metrics and demo work unchanged; generation happens on the remote and
its tokens are passed through one by one. Adapters are validated here against the model's layer shapes (built
from its config on the meta device) before the remote is asked to serve them: vLLM loads them at run time,
LoRAX on first use, TGI only those it was started with (checked against its list, and refused otherwise).
An adapter this server has not loaded is refused here, before any request reaches the remote.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import httpx

from common.models import model_fingerprint, model_name
from serve.engine.adapter_files import AdapterWeights, read_adapter
from serve.engine.remote_energy import CounterEnergy
from common.http import EndpointError, with_retries
from serve.engine.generation import Generation
from serve.engine.interface import Engine
from serve.engine.prompts import PromptFormat, check_lengths
from serve.engine.remote_backends import BACKENDS
from serve.engine.remote_protocols import Finish, RemoteInfo, error_from_body
from serve.engine.types import GenerationRequest, GenerationResult, Timings, Token
from serve.errors import AdapterInvalid, AdapterNotFound, GenerationFailed, ServeError, Timeout, Unavailable

log = logging.getLogger("supportkit.engine.remote")
RETRIED = (502, 503, 504)


def layer_shapes(model_dir: Path) -> dict[str, tuple[int, int]]:
    """(in, out) of every decoder linear layer, as the local engine wraps them, from the config alone."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: (m.in_features, m.out_features) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and ".layers." in f".{name}"}


def check_prompt_dir(path: Path) -> Path:
    """A model directory for prompts only: config and tokenizer (weights optional)."""
    from common.models import ModelError

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json; the remote engine needs the model's config and tokenizer")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise ModelError(f"{path} has no tokenizer files (tokenizer.json or tokenizer_config.json)")
    return path


class RemoteEngine(Engine):
    def __init__(
        self, model_dir: Path, kind: str, url: str, timeout_s: float = 60.0, health_interval_s: float = 2.0,
        max_lora_rank: int = 64, max_input_tokens: int = 2048, max_total_tokens: int = 4096,
        static_adapters: list[str] | None = None, adapter_dir: str | None = None, energy: CounterEnergy | None = None,
    ):
        if kind not in BACKENDS:
            raise ValueError(f"unknown remote engine kind {kind!r} (tgi, lorax or vllm)")
        self.model_dir = check_prompt_dir(model_dir)
        self.kind, self.url = kind, url.rstrip("/")
        self.name = model_name(self.model_dir)
        weights = list(self.model_dir.glob("*.safetensors"))
        self.fingerprint = model_fingerprint(self.model_dir) if weights else None
        self.prompts = PromptFormat(self.model_dir)
        self.tokenizer = self.prompts.tokenizer
        self.layer_shapes = layer_shapes(self.model_dir)
        self.device, self.dtype = "remote", "remote"
        self.max_lora_rank = max_lora_rank
        self.max_input_tokens, self.max_total_tokens = max_input_tokens, max_total_tokens
        self._limits = (max_input_tokens, max_total_tokens)
        self.energy = energy
        self.info: RemoteInfo | None = None
        self.timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        self.limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self.http = httpx.Client(timeout=self.timeout, limits=self.limits)  # control calls, from threads
        self.backend = BACKENDS[kind](self.url, self.http, adapter_dir, set(static_adapters) if static_adapters else None)
        self._clients: dict[int, httpx.AsyncClient] = {}  # generation calls, one pooled client per event loop
        self.health_interval_s = health_interval_s
        self._healthy = False
        self._adapters: dict[str, AdapterWeights] = {}
        self._running: dict[str, str | None] = {}  # request id -> adapter
        self._tasks: set[asyncio.Task] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_finish = None

    # ---- lifecycle and state ---------------------------------------------------------------------------
    def start(self) -> None:
        self._poll()  # one check now: a reachable remote is known (and its limits read) before serving
        if not self._healthy:
            log.warning("the %s engine at %s is not reachable yet; /health stays 503 until it is", self.kind, self.url)
        self._thread = threading.Thread(target=self._watch, name="supportkit-remote-health", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        self.http.close()

    def health(self) -> bool:
        return self._healthy

    def adapters(self) -> dict[str, AdapterWeights]:
        with self._lock:
            return dict(self._adapters)

    def stats(self) -> dict:
        running = [a for a in list(self._running.values()) if a]
        return {
            "queue_size": 0, "batch_size": len(self._running),
            "idle_joules": self.energy.idle_joules if self.energy else 0.0,
            "energy_source": self.energy.source if self.energy else "unknown",
            "running_adapters": sorted(set(running)), "waiting_adapters": [],
            "resident_adapters": sorted(self.adapters()),
            "max_adapters": (self.info.max_adapters if self.info and self.info.max_adapters else len(self._adapters)),
        }

    def _get(self, url: str, attempts: int = 3) -> httpx.Response:
        """GET with common.http's retry policy (idempotent): transport errors and 502/503/504 are retried with
        backoff; what still fails is Unavailable, and any other error status the remote's own error."""

        def once() -> httpx.Response:
            try:
                r = self.http.get(url)
            except httpx.TransportError as exc:
                raise EndpointError(f"the {self.kind} engine at {self.url} is unreachable: {exc}", retryable=True) from None
            if r.status_code in RETRIED:
                raise EndpointError(error_from_body(r.status_code, r.content, f"GET {url}").message, True, r.status_code)
            if r.status_code != 200:
                raise error_from_body(r.status_code, r.content, f"GET {url}")
            return r

        try:
            return with_retries(once, max_retries=attempts - 1, backoff_s=0.2)
        except EndpointError as exc:
            raise Unavailable(str(exc)) from None

    def _poll(self) -> None:
        try:
            ok = self.http.get(self.backend.health_url, timeout=min(5.0, self.timeout.read or 5.0)).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok and (not self._healthy or self.info is None):
            try:
                self._refresh()
            except (ServeError, httpx.HTTPError, ValueError, KeyError) as exc:
                log.warning("the %s engine answers /health but not its model list: %s", self.kind, exc)
                ok = False
        if ok != self._healthy:
            log.info("the %s engine at %s is %s", self.kind, self.url, "healthy" if ok else "unhealthy")
        self._healthy = ok

    def _watch(self) -> None:
        while not self._stop.wait(self.health_interval_s):
            try:
                self._poll()
            except Exception:  # the poller must outlive any surprise, or health would freeze
                log.exception("remote health check failed")

    def _refresh(self) -> None:
        """Read the remote's limits and adapters; re-offer our adapters to it (a restarted vLLM forgot them)."""
        info = self.backend.read_info(self._get)
        self.info = info
        if info.device:
            self.device = info.device
        if info.dtype:
            self.dtype = info.dtype
        self.max_input_tokens = min(self._limits[0], info.max_input_tokens or self._limits[0])
        self.max_total_tokens = min(self._limits[1], info.max_total_tokens or self._limits[1])
        self.max_input_tokens = min(self.max_input_tokens, self.max_total_tokens - 1)
        for name, weights in self.adapters().items():
            try:
                self._offer(name, weights.path)
            except ServeError as exc:
                with self._lock:
                    self._adapters.pop(name, None)
                log.error("adapter %s withdrawn: %s", name, exc.message)

    # ---- adapters --------------------------------------------------------------------------------------
    def _offer(self, name: str, path: Path) -> None:
        self.backend.offer(name, path, self.info)

    def load_adapter(self, name: str, path: Path) -> AdapterWeights:
        """Validate here (shapes, rank, base model), then have the remote serve it (called in a worker thread)."""
        weights = read_adapter(path, name, self.layer_shapes, self.max_lora_rank, self.fingerprint)
        weights.layers = {}  # the weights live on the remote; keep only what the chat service and /v1/models read
        if self._healthy:
            try:
                self._offer(name, path)
            except httpx.TransportError as exc:
                raise AdapterInvalid(f"adapter {name!r}: the {self.kind} engine at {self.url} is unreachable ({exc})") from exc
        # else: offered when the remote becomes healthy (see _refresh), and withdrawn if it refuses
        with self._lock:
            self._adapters[name] = weights
        return weights

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if self._adapters.pop(name, None) is None:
                raise AdapterNotFound(f"adapter {name!r} is not loaded")
        if self._healthy:
            self.backend.withdraw(name, self.info)

    # ---- prompts ---------------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict], chat_template: str | None = None) -> str:
        return self.prompts.render_chat(messages, chat_template)

    def count_tokens(self, text: str) -> int:
        return self.prompts.count_tokens(text)

    # ---- requests --------------------------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None or client.is_closed:
            client = self._clients[id(loop)] = httpx.AsyncClient(timeout=self.timeout, limits=self.limits)
        return client

    def _check(self, req: GenerationRequest) -> int:
        """Refuse here what the remote would refuse (or silently serve from the base model); returns prompt tokens."""
        if req.adapter and req.adapter not in self.adapters():
            raise AdapterNotFound(f"adapter {req.adapter!r} is not loaded; GET /v1/models lists the adapters being served")
        n = self.count_tokens(req.prompt)
        if req.params.truncate:
            n = min(n, req.params.truncate)
        check_lengths(n, req.params, self.max_input_tokens, self.max_total_tokens)
        return n

    def _events(self, req: GenerationRequest):
        weights = self.adapters().get(req.adapter) if req.adapter else None
        return self.backend.events(self._client(), req, weights.path if weights else None, self.info, self.name)

    def submit(self, req: GenerationRequest, timeout_s: float | None = None) -> Generation:
        """Refuse here what the remote would refuse; the remote is asked once the events are read."""
        prompt_tokens = self._check(req)
        arrival = time.monotonic()
        return Generation(self._run(req, prompt_tokens, arrival, arrival + timeout_s if timeout_s else None))

    async def _run(self, req: GenerationRequest, prompt_tokens: int, arrival: float, deadline: float | None):
        """Token events as the remote sends them, then one GenerationResult; past the deadline, a Timeout."""
        first = None
        tokens: list[Token] = []
        self._running[req.id] = req.adapter
        if self.energy:
            await self.energy.begin(req.id)
        done = failed = False
        try:
            try:
                async for event in self._events(req):
                    if isinstance(event, Finish):
                        result = await self._result(req, event, tokens, prompt_tokens, arrival, first)
                        done = True
                        yield result
                        return
                    tokens.append(event)
                    if self.energy:
                        self.energy.token(req.id)
                        if first is None:  # read in the background: the token is not held back for it
                            task = asyncio.create_task(self.energy.first_token(req.id))
                            self._tasks.add(task)
                            task.add_done_callback(self._tasks.discard)
                    first = first or time.monotonic()
                    if deadline is not None and time.monotonic() > deadline:
                        raise Timeout(f"the generation did not finish within {deadline - arrival:g} s; ask for fewer tokens")
                    yield event
            except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
                raise GenerationFailed(f"the {self.kind} engine at {self.url} sent nothing for "
                                       f"{self.timeout.read:g} s ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                self._healthy = False  # the poller confirms or restores it
                what = "during the generation" if tokens else "before the generation started"
                raise Unavailable(f"the {self.kind} engine at {self.url} is unreachable or went away {what} "
                                  f"({type(exc).__name__})") from None
            except (ValueError, KeyError, TypeError) as exc:  # not the protocol we were told to expect
                raise GenerationFailed(f"the {self.kind} engine at {self.url} sent an answer this server cannot read "
                                       f"({type(exc).__name__}: {exc}); is --engine right?") from None
            raise GenerationFailed(f"the {self.kind} engine ended the generation without a result")
        except Timeout:
            raise  # cut short, counted as cancelled below (as locally)
        except ServeError:
            failed = True  # reported to the client (and counted) by the HTTP layer
            raise
        finally:
            self._running.pop(req.id, None)
            if not done:
                if self.energy:
                    self.energy.forget(req.id)
                if not failed and self.on_finish:  # the client went away: counted as cancelled, as locally
                    self.on_finish(self._partial(req, tokens, prompt_tokens, arrival, first))

    async def _result(self, req, finish: Finish, tokens, prompt_tokens, arrival, first) -> GenerationResult:
        phases = await self.energy.end(req.id) if self.energy else None
        joules = sum(phases.values()) if phases is not None else None
        now = time.monotonic()
        text = finish.text if finish.text is not None else "".join(t.text for t in tokens)
        result = GenerationResult(
            text=text, finish_reason=finish.finish_reason, tokens=tokens,
            prompt_tokens=finish.prompt_tokens or prompt_tokens, seed=finish.seed, prefill=finish.prefill,
            cached_tokens=finish.cached_tokens, adapter=req.adapter, energy_joules=joules, energy_by_phase=phases or {},
            energy_source=self.energy.source if self.energy and joules is not None else "unknown",
            timings=Timings(first_token_s=(first or now) - arrival, inference_s=now - arrival, total_s=now - arrival),
        )
        if self.on_finish:
            self.on_finish(result)
        return result

    def _partial(self, req, tokens, prompt_tokens, arrival, first) -> GenerationResult:
        now = time.monotonic()
        return GenerationResult(
            text="".join(t.text for t in tokens), finish_reason="cancelled", tokens=tokens, prompt_tokens=prompt_tokens,
            seed=req.params.seed, adapter=req.adapter,
            timings=Timings(first_token_s=(first or now) - arrival, inference_s=now - arrival, total_s=now - arrival),
        )
