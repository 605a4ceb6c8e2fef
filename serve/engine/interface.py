"""The Engine interface: what the HTTP routes, the chat service, the registry, the metrics and the demo rely on.

Two engines implement it: `serve.engine.local.LocalEngine` (transformers + peft in this process) and
`serve.engine.remote.RemoteEngine` (a TGI, LoRAX or vLLM deployment over HTTP). Both render prompts and check
lengths with one `serve.engine.prompts.PromptFormat`. Engines subclass it for `stream` and `generate`, which are
`submit` read two ways.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from serve.engine.adapter_files import AdapterWeights
from serve.engine.generation import Generation
from serve.engine.types import GenerationRequest, GenerationResult, Token


@runtime_checkable
class Engine(Protocol):
    name: str  # the base model's name (what `model` names it by on the OpenAI API)
    fingerprint: str | None
    device: str
    dtype: Any  # a torch.dtype locally; the remote's dtype name, or "remote"
    max_input_tokens: int
    max_total_tokens: int
    on_finish: Callable[[GenerationResult], None] | None  # called for every request that ran (metrics)

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def health(self) -> bool: ...

    def stats(self) -> dict: ...

    def adapters(self) -> dict[str, AdapterWeights]: ...

    def load_adapter(self, name: str, path: Path) -> AdapterWeights: ...

    def unload_adapter(self, name: str) -> None: ...

    def render_chat(self, messages: list[dict], chat_template: str | None = None) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def prepare_grammar(self, grammar) -> None:
        """Make a request's structured-output grammar ready before it is submitted (the local engine compiles it
        for its vocabulary: seconds for a new schema, so callers run this in a worker thread), or raise
        InvalidRequest if it cannot be enforced. Engines that pass grammars on to a remote have nothing to do."""
        return None

    def submit(self, req: GenerationRequest, timeout_s: float | None = None) -> Generation:
        """Validate the request and resolve its adapter once, then queue it; raises ServeError (unknown adapter,
        prompt too long, queue full, engine down) before any answer begins. Past `timeout_s` the engine drops the
        request and its events end with a Timeout error."""
        ...

    def stream(self, req: GenerationRequest, timeout_s: float | None = None) -> AsyncIterator[Token | GenerationResult]:
        """Token events as they are produced, then one GenerationResult."""
        return self.submit(req, timeout_s)

    async def generate(self, req: GenerationRequest, timeout_s: float | None = None) -> GenerationResult:
        return await self.submit(req, timeout_s).result()
