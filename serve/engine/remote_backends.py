"""What differs between the remote engines, one small class each: how an adapter comes to be served (TGI: only
those it was started with; LoRAX: on first use; vLLM: loaded at run time), how a request names it, and which wire
protocol carries it (TGI's for TGI and LoRAX, OpenAI completions for vLLM)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from serve.engine.remote_protocols import RemoteInfo, TGIProtocol, VLLMProtocol, error_from_body
from serve.engine.types import GenerationRequest
from serve.errors import AdapterInvalid

log = logging.getLogger("supportkit.engine.remote")


class Backend:
    kind = ""
    label = ""

    def __init__(self, url: str, http: httpx.Client, adapter_dir: str | None = None,
                 static_adapters: set[str] | None = None):
        self.url, self.http = url.rstrip("/"), http
        self.adapter_dir, self.static_adapters = adapter_dir, static_adapters
        self.protocol = self._protocol()

    def _protocol(self):
        return TGIProtocol(self.url)

    @property
    def health_url(self) -> str:
        return self.protocol.health_url

    def read_info(self, get) -> RemoteInfo:
        return self.protocol.read_info(get)

    def remote_path(self, name: str, path: Path) -> str:
        """Where the remote finds the adapter: its own adapter directory when it has one, else our path."""
        return f"{self.adapter_dir.rstrip('/')}/{name}" if self.adapter_dir else str(path)

    def offer(self, name: str, path: Path, info: RemoteInfo | None) -> None:
        """Make sure the remote serves `name`, or raise AdapterInvalid saying why it cannot."""

    def withdraw(self, name: str, info: RemoteInfo | None) -> None:
        """The adapter was unloaded here; free it on the remote where the remote can."""

    def events(self, client: httpx.AsyncClient, req: GenerationRequest, path: Path | None, info: RemoteInfo | None,
               base_name: str):
        """The remote's Token events and one Finish for `req` (`path`: the adapter's directory here)."""
        return self.protocol.stream(client, req, req.adapter)


class TGIBackend(Backend):
    kind, label = "tgi", "TGI"

    def offer(self, name, path, info):
        served = info.adapters if info and info.adapters is not None else self.static_adapters
        if served is None:
            raise AdapterInvalid(
                f"adapter {name!r}: the TGI engine at {self.url} does not list its adapters; name those it was "
                "started with (its --lora-adapters) in SUPPORTKIT_SERVE_ENGINE_ADAPTERS"
            )
        if name not in served:
            raise AdapterInvalid(
                f"adapter {name!r} is not among the adapters the TGI engine at {self.url} was started with "
                f"({', '.join(sorted(served)) or 'none'}); TGI loads adapters only at start (--lora-adapters)"
            )


class LoRAXBackend(Backend):
    kind, label = "lorax", "LoRAX"

    def offer(self, name, path, info):
        return  # LoRAX loads an adapter on its first request

    def events(self, client, req, path, info, base_name):
        if req.adapter and self.adapter_dir and path is not None:  # the remote reads it from its own directory
            return self.protocol.stream(client, req, self.remote_path(req.adapter, path), "local")
        return self.protocol.stream(client, req, req.adapter)


class VLLMBackend(Backend):
    kind, label = "vllm", "vLLM"

    def _protocol(self):
        return VLLMProtocol(self.url)

    def offer(self, name, path, info):
        if info and info.adapters is not None and name in info.adapters:
            return  # vLLM serves it already (--lora-modules, or loaded earlier)
        r = self.http.post(self.url + "/load_lora_adapter", json={"lora_name": name, "lora_path": self.remote_path(name, path)})
        if r.status_code == 200 or (r.status_code == 400 and "already" in r.text):
            if info and info.adapters is not None:
                info.adapters.add(name)
            return
        if r.status_code in (404, 405):
            raise AdapterInvalid(
                f"adapter {name!r} is not served by the vLLM engine at {self.url}, which does not load adapters at "
                "run time (start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or list the adapter in --lora-modules)"
            )
        raise AdapterInvalid(f"adapter {name!r}: {error_from_body(r.status_code, r.content, 'the vLLM engine refused it').message}")

    def withdraw(self, name, info):
        if info and info.adapters is not None:
            info.adapters.discard(name)
        try:  # frees the remote's memory; with static adapters the route is absent and this server's refusal suffices
            self.http.post(self.url + "/unload_lora_adapter", json={"lora_name": name})
        except httpx.HTTPError as exc:
            log.warning("the vLLM engine could not unload %s: %s", name, exc)

    def events(self, client, req, path, info, base_name):
        model = req.adapter or (info.model_id if info and info.model_id else base_name)
        return self.protocol.stream(client, req, model)


BACKENDS: dict[str, type[Backend]] = {b.kind: b for b in (TGIBackend, LoRAXBackend, VLLMBackend)}
