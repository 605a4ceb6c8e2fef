"""Reading and validating a PEFT LoRA adapter directory before it may touch the running model.

Only safetensors are read (pickled .bin weights are refused); every tensor must belong to a linear layer
of the base model with matching shapes; features the slot engine cannot apply exactly are refused by name.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.adapter_store import NAME_RULE, valid_name
from common.manifest import read_manifest
from serve.errors import AdapterInvalid

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
_UNSUPPORTED_FLAGS = {
    "use_dora": "DoRA", "fan_in_fan_out": "fan_in_fan_out layers", "lora_bias": "LoRA bias terms",
    "use_qalora": "QALoRA", "use_bdlora": "BD-LoRA",
}
_UNSUPPORTED_SET = {
    "modules_to_save": "modules_to_save (fully trained extra modules)", "layer_replication": "layer replication",
    "trainable_token_indices": "trainable token indices", "alora_invocation_tokens": "aLoRA",
    "target_parameters": "target_parameters (LoRA on raw parameters)",
}


def check_name(name: str) -> str:
    if not valid_name(name):
        raise AdapterInvalid(f"invalid adapter name {name!r}: use {NAME_RULE}")
    return name


@dataclass
class AdapterWeights:
    name: str
    path: Path
    rank: int
    alpha: float
    target_modules: list[str]
    layers: dict[str, tuple]  # module name -> (A [r, in], B [out, r], scaling)
    manifest: dict | None = None
    system_prompt: str | None = None
    chat_template: str | None = None
    config: dict = field(default_factory=dict)
    uid: int = field(default_factory=itertools.count(1).__next__)  # this load's identity (prefix cache keys)


def _pattern_value(patterns: dict, module: str, default):
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_adapter(
    path: Path, name: str, modules: dict[str, tuple[int, int]], max_rank: int,
    base_fingerprint: str | None = None,
) -> AdapterWeights:
    """Load and validate; raises AdapterInvalid with the reason. `modules`: name -> (in, out) of each linear."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_dir():
        raise AdapterInvalid(f"adapter {name!r}: {path} is not a directory")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterInvalid(f"adapter {name!r}: no adapter_config.json (not a PEFT adapter directory)")
    try:
        config = json.loads(config_file.read_text())
        assert isinstance(config, dict)
    except (ValueError, AssertionError) as exc:
        raise AdapterInvalid(f"adapter {name!r}: adapter_config.json is not a JSON object") from exc
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterInvalid(f"adapter {name!r}: peft_type {config.get('peft_type')!r} is not supported (LoRA only)")
    for key, what in _UNSUPPORTED_FLAGS.items():
        if config.get(key):
            raise AdapterInvalid(f"adapter {name!r}: {what} is not supported")
    for key, what in _UNSUPPORTED_SET.items():
        if config.get(key):
            raise AdapterInvalid(f"adapter {name!r}: {what} is not supported")
    if config.get("bias", "none") != "none":
        raise AdapterInvalid(f"adapter {name!r}: bias={config['bias']!r} is not supported (only 'none')")

    weights_file = path / "adapter_model.safetensors"
    if not weights_file.is_file():
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise AdapterInvalid(f"adapter {name!r}: pickled weights (.bin/.pt) are refused; save it with safetensors")
        raise AdapterInvalid(f"adapter {name!r}: no adapter_model.safetensors")
    try:
        tensors = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterInvalid(f"adapter {name!r}: adapter_model.safetensors cannot be read ({exc})") from exc

    try:
        manifest = read_manifest(path)
    except ValueError as exc:
        raise AdapterInvalid(f"adapter {name!r}: {exc}") from exc
    if manifest and manifest.base_model and manifest.base_model.fingerprint and base_fingerprint:
        if manifest.base_model.fingerprint != base_fingerprint:
            raise AdapterInvalid(
                f"adapter {name!r} was trained on base model {manifest.base_model.name!r} "
                f"({manifest.base_model.fingerprint}), not on the model being served ({base_fingerprint})"
            )

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        m = _KEY.match(key)
        if not m:
            raise AdapterInvalid(f"adapter {name!r}: unsupported tensor {key!r} (only LoRA A/B on linear layers)")
        pairs.setdefault(m["module"], {})[m["ab"]] = tensor
    if not pairs:
        raise AdapterInvalid(f"adapter {name!r}: adapter_model.safetensors holds no LoRA weights")

    alpha = float(config.get("lora_alpha", config.get("r", 8)))
    layers = {}
    for module, ab in sorted(pairs.items()):
        if module not in modules:
            raise AdapterInvalid(f"adapter {name!r}: target module {module!r} does not exist in the base model")
        if set(ab) != {"A", "B"}:
            raise AdapterInvalid(f"adapter {name!r}: module {module!r} lacks lora_A or lora_B")
        a, b = ab["A"], ab["B"]
        fan_in, fan_out = modules[module]
        r = a.shape[0]
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != fan_in or b.shape != (fan_out, r):
            raise AdapterInvalid(
                f"adapter {name!r}: shapes of {module!r} (A {tuple(a.shape)}, B {tuple(b.shape)}) do not fit the base "
                f"model's layer ({fan_in} -> {fan_out}); was it trained on another base model?"
            )
        if r > max_rank:
            raise AdapterInvalid(
                f"adapter {name!r}: rank {r} exceeds the server's maximum LoRA rank {max_rank} "
                "(raise SUPPORTKIT_SERVE_MAX_LORA_RANK)"
            )
        a_m = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha))
        scaling = a_m / math.sqrt(r) if config.get("use_rslora") else a_m / r
        layers[module] = (a, b, scaling)

    # One fused norm over all tensors is non-finite if any weight is (or if the norm overflows): then look closer.
    if not torch.isfinite(torch.nn.utils.get_total_norm([t for a, b, _ in layers.values() for t in (a, b)])):
        for module, (a, b, _) in layers.items():
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise AdapterInvalid(f"adapter {name!r}: module {module!r} has non-finite weights")
    ranks = {ab[0].shape[0] for ab in layers.values()}
    targets = sorted({m.rsplit(".", 1)[-1] for m in layers})
    return AdapterWeights(
        name=name, path=path, rank=max(ranks), alpha=alpha, target_modules=targets, layers=layers,
        manifest=manifest.model_dump(mode="json", exclude_none=True) if manifest else None,
        system_prompt=manifest.system_prompt if manifest else None,
        chat_template=manifest.chat_template if manifest else None,
        config=config,
    )
