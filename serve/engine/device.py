"""Where and in what precision the local engine runs, and loading the base model there (the one place that does)."""

from __future__ import annotations

from pathlib import Path

import torch

from common.cpu import native_bf16


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if native_bf16() else torch.float32


def load_model(model_dir: Path, dtype: torch.dtype, device: str):
    """The base model from safetensors, on `device`, ready for inference (before the LoRA slots wrap its layers)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, use_safetensors=True, attn_implementation="sdpa"
    ).to(device)
    model.eval()
    # Frozen bf16 weights (requires_grad=False) hit a 4-5x slower CPU path at batch 8; inference_mode
    # keeps autograd off either way.
    for p in model.parameters():
        p.requires_grad_(True)
    return model
