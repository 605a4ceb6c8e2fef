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

    def prefill(
        self, prompts: list[list[int]], slots: list[int], cached: list[int] | None = None,
        pasts: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None, all_logits: bool = False,
    ) -> torch.Tensor:
        """Prefill prompts together and join them to the batch's cache. The first `cached[i]` tokens of prompt i
        come from the prefix cache (`pasts[i]`: per layer keys and values [kv heads, tokens, head dim]): only the
        rest is computed. Cache columns: the pasts right-aligned, then the new tokens left-padded; every column
        carries its absolute position, so masks (the sliding window too) see each row's true layout.
        Returns fp32 logits: of each prompt's last token [n, V], or of every computed token [1, T, V] with
        `all_logits` (one prompt, nothing cached)."""
        from transformers import DynamicCache

        cached = cached or [0] * len(prompts)
        ids, pos, valid = left_padded([p[c:] for p, c in zip(prompts, cached)], self.device)
        offset = torch.tensor(cached, device=self.device)[:, None]
        pos = torch.where(valid, pos + offset, 0)
        width = max(cached)
        past_pos = torch.arange(width, device=self.device)[None] - (width - offset)
        past_valid = past_pos >= 0
        cache = DynamicCache()
        for layer, (k, v) in enumerate(self._joined_pasts(pasts, cached, width)):
            cache.update(k, v, layer)
        k_pos, k_valid = torch.cat([past_pos.clamp(min=0), pos], 1), torch.cat([past_valid, valid], 1)
        masks = attention_masks(pos, k_pos, k_valid, self.window, self.by_type)
        self.ctx.set(slots, self.device)
        out = self.model(
            input_ids=ids, position_ids=pos, attention_mask=masks, cache=cache, use_cache=True,
            logits_to_keep=0 if all_logits else 1,
        )
        self.batch.append_rows(cache, k_pos, k_valid)
        return out.logits.float() if all_logits else out.logits[:, -1].float()

    def _joined_pasts(self, pasts, cached: list[int], width: int):
        """Per layer, the rows' cached keys and values [n, kv heads, width, head dim], each right-aligned."""
        if not width:
            return
        sample = next(p for p, c in zip(pasts, cached) if c)
        for layer, (k0, v0) in enumerate(sample):
            k = k0.new_zeros(len(cached), k0.shape[0], width, k0.shape[2])
            v = v0.new_zeros(len(cached), v0.shape[0], width, v0.shape[2])
            for i, c in enumerate(cached):
                if c:
                    k[i, :, width - c:] = pasts[i][layer][0]
                    v[i, :, width - c:] = pasts[i][layer][1]
            yield k, v

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

    def row_kv(self, row: int):
        return self.batch.row_kv(row)

    def keep_rows(self, keep: list[int]) -> None:
        self.batch.keep_rows(keep)

    def reset(self) -> None:
        self.batch = BatchCache()
