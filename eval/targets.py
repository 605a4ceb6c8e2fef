"""Which targets to ask: the endpoint's base model and adapters, with what their manifests say.

`GET /v1/models` lists the base model (no `parent`) and each adapter (`parent` = the base's id; the kit adds
the adapter's manifest as `manifest`). Manifests can also be read from an adapter store directory, for
endpoints that do not publish them (vLLM, TGI, LoRAX).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.adapter_store import read_manifests
from common.http import EndpointError
from eval.clients import OpenAIChat

BASE_ALIAS = "base"


class TargetError(ValueError):
    """Targets that cannot be resolved; the message says which and why."""


@dataclass
class Target:
    name: str
    model: str | None  # what goes in the request's `model` / `adapter_id`; None = the base model on TGI
    is_base: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def val_loss(self) -> float | None:
        value = (self.manifest.get("metrics") or {}).get("val_loss")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def train_kwh(self) -> float | None:
        value = ((self.manifest.get("energy") or {}).get("kwh") or {}).get("total")
        return float(value) if isinstance(value, (int, float)) else None


def discover(url: str, api_key: str | None = None, timeout: float = 30) -> tuple[str | None, dict[str, dict]]:
    """(base model id, {adapter id: manifest or {}}) from the endpoint's /v1/models."""
    models = OpenAIChat(url, api_key, timeout).list_models()
    adapters = {m["id"]: (m.get("manifest") if isinstance(m.get("manifest"), dict) else {})
                for m in models if m.get("parent")}
    bases = [m["id"] for m in models if not m.get("parent")]
    parents = {m["parent"] for m in models if m.get("parent")}
    base = next((b for b in bases if b in parents), bases[0] if bases else None)
    return base, adapters


def store_manifests(store: Path) -> dict[str, dict]:
    """{adapter name: manifest JSON} for every published adapter with a valid manifest."""
    if not Path(store).is_dir():
        raise TargetError(f"adapter store not found: {store}")
    return {name: m.model_dump(mode="json", exclude_none=True) for name, m in read_manifests(store).items()}


def resolve_targets(url: str, api: str, wanted: list[str] | None, api_key: str | None = None,
                    store: Path | None = None) -> list[Target]:
    """Targets in a stable order: base first, then adapters by name (or the order of `wanted`)."""
    try:
        base, adapters = discover(url, api_key)
    except EndpointError as exc:
        if not wanted:
            raise TargetError(f"cannot list the endpoint's models ({exc}); name the targets with --targets") from None
        base, adapters = None, {}
    manifests = store_manifests(store) if store else {}
    names = wanted or ([BASE_ALIAS] if base else []) + sorted(adapters)
    if not names:
        raise TargetError(f"{url} lists no models")
    targets: list[Target] = []
    for name in names:
        if name == BASE_ALIAS or (base and name == base):
            label = base or BASE_ALIAS
            # TGI's base model is asked without adapter_id; the OpenAI route needs the base model's id.
            targets.append(Target(label, None if api == "tgi" else base, is_base=True))
        elif adapters and name not in adapters:
            raise TargetError(f"target {name!r} is not served by {url} (it serves: {', '.join(sorted(adapters)) or 'no adapters'})")
        else:
            manifest = adapters.get(name) or manifests.get(name) or {}
            targets.append(Target(name, name, manifest=manifest))
    if len({t.name for t in targets}) != len(targets):
        raise TargetError(f"duplicate targets in {names}")
    return targets
