"""Several random LoRA adapters for one real model at the cost of one: the first is built with peft
(common.tiny.build_random_adapter, which loads the model), the others are copies with freshly drawn weights."""

from __future__ import annotations

import shutil
from pathlib import Path

from common.tiny import LORA_MODULES, build_random_adapter


def random_adapters(model_dir: Path, outs: dict[Path, int], r: int = 16, alpha: int = 32,
                    target_modules: tuple[str, ...] = LORA_MODULES, scale: float = 0.03) -> list[Path]:
    """Write one adapter per (directory: seed) of `outs`: same shapes and config, different random A and B."""
    import torch
    from safetensors.torch import load_file, save_file

    (first, seed), *rest = outs.items()
    build_random_adapter(model_dir, first, r=r, alpha=alpha, target_modules=target_modules, seed=seed, scale=scale)
    weights = load_file(Path(first) / "adapter_model.safetensors")
    for out, seed in rest:
        shutil.copytree(first, out)
        gen = torch.Generator().manual_seed(seed)
        drawn = {k: (torch.randn(v.shape, generator=gen) * scale).to(v.dtype) for k, v in sorted(weights.items())}
        save_file(drawn, Path(out) / "adapter_model.safetensors", metadata={"format": "pt"})
    return [Path(p) for p in outs]
