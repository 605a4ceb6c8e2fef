"""Reference generations straight from transformers + peft, to compare the server's tokens against."""

from __future__ import annotations

from functools import lru_cache

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@lru_cache(maxsize=8)
def _model(model_dir: str, adapter_dir: str | None):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()


def greedy_ids(model_dir, prompt: str, max_new_tokens: int, adapter_dir=None) -> list[int]:
    """Token ids that `generate` picks greedily for `prompt` (no special tokens added, as the server does)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = _model(str(model_dir), str(adapter_dir) if adapter_dir else None)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()
