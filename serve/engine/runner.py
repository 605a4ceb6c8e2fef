"""The local engine's model runner: the forward passes (a joint prefill of newly admitted rows, one decode step of
the running batch) over the batch's KV cache, each row with its own adapter slot. It returns logits; choosing
tokens from them is the output processor's job."""

from __future__ import annotations

import torch

from serve.engine.kv_batch import BatchCache, attention_masks, left_padded
from serve.engine.lora_slots import BatchContext


class ModelRunner:
    def __init__(self, model, ctx: BatchContext, device: str):
        self.model, self.ctx, self.device = model, ctx, device
        text_config = model.config.get_text_config()
        self.window = getattr(text_config, "sliding_window", None)
        self.by_type = "sliding_attention" in (getattr(text_config, "layer_types", None) or [])
        self.batch = BatchCache()

    def prefill(self, prompts: list[list[int]], slots: list[int], all_logits: bool = False) -> torch.Tensor:
        """Prefill prompts together (left-padded) and join them to the batch's cache. Returns fp32 logits: of
        each prompt's last token [n, V], or of every prompt token [1, T, V] with `all_logits` (one prompt)."""
        from transformers import DynamicCache

        ids, pos, valid = left_padded(prompts, self.device)
        masks = attention_masks(pos, pos, valid, self.window, self.by_type)
        self.ctx.set(slots, self.device)
        cache = DynamicCache()
        out = self.model(
            input_ids=ids, position_ids=pos, attention_mask=masks, cache=cache, use_cache=True,
            logits_to_keep=0 if all_logits else 1,
        )
        self.batch.append_rows(cache, pos, valid)
        return out.logits.float() if all_logits else out.logits[:, -1].float()

    def decode(self, last_tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        """One step for every running row (in cache order): fp32 logits of the next token [n, V]."""
        input_ids = torch.tensor([[t] for t in last_tokens], device=self.device)
        next_pos = torch.tensor(positions, device=self.device)
        k_pos, k_valid = self.batch.step_inputs(next_pos)
        masks = attention_masks(next_pos[:, None], k_pos, k_valid, self.window, self.by_type)
        self.ctx.set(slots, self.device)
        out = self.model(
            input_ids=input_ids, position_ids=next_pos[:, None], attention_mask=masks, cache=self.batch.cache,
            use_cache=True, logits_to_keep=1,
        )
        self.batch.commit_step(k_pos, k_valid)
        return out.logits[:, -1].float()

    def keep_rows(self, keep: list[int]) -> None:
        self.batch.keep_rows(keep)

    def reset(self) -> None:
        self.batch = BatchCache()
