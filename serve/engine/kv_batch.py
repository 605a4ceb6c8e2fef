"""The running batch's KV cache: rows of different lengths, padded, joined and dropped between steps.

The cache holds full keys and values for every layer (sliding-window layers too); a row's padding columns may
sit before its tokens or between a cached prefix and the rest of its prompt. Attention masks are built
here, per row and per layer type, from each cache column's absolute position and validity. The model gets
them prepared (a dict by layer type, or one 4D mask), so it never has to guess positions from padding.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def left_padded(prompts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, positions and validity [n, T] of prompts padded on the left to the longest.

    Padding columns get position 0, so each padding query still sees one real key (the first token) and its
    attention stays finite; real tokens never see padding (validity), so their results are unchanged.
    """
    longest = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):] = torch.tensor(p)
    lengths = torch.tensor([len(p) for p in prompts])[:, None]
    pos = torch.arange(longest)[None] - (longest - lengths)
    return ids.to(device), pos.clamp(min=0).to(device), (pos >= 0).to(device)


def attention_masks(q_pos: torch.Tensor, k_pos: torch.Tensor, k_valid: torch.Tensor, window: int | None, by_type: bool):
    """Boolean masks [B, 1, Q, K] (True = attend): causal, padding, and the sliding window where it applies."""
    q = q_pos[:, None, :, None]
    k = k_pos[:, None, None, :]
    full = k_valid[:, None, None, :] & (k <= q)
    if not by_type:
        return full
    masks = {"full_attention": full}
    masks["sliding_attention"] = full & (q - k < window) if window else full
    return masks


class BatchCache:
    """A DynamicCache over B rows plus, per cache column, its absolute position and whether it is real."""

    def __init__(self):
        self.cache: DynamicCache | None = None
        self.pos: torch.Tensor | None = None  # [B, T] long
        self.valid: torch.Tensor | None = None  # [B, T] bool

    @property
    def size(self) -> int:
        return 0 if self.pos is None else self.pos.shape[0]

    @staticmethod
    def _pad_left(t: torch.Tensor, n: int, dim: int, value=0) -> torch.Tensor:
        if n == 0:
            return t
        shape = list(t.shape)
        shape[dim] = n
        return torch.cat([torch.full(shape, value, dtype=t.dtype, device=t.device), t], dim=dim)

    def append_rows(self, new_cache: DynamicCache, pos: torch.Tensor, valid: torch.Tensor) -> None:
        """Add freshly prefilled rows (their cache, and each column's position and validity [n, T]) at the end."""
        if self.cache is None:
            self.cache, self.pos, self.valid = new_cache, pos, valid
            return
        t_batch, t_row = self.pos.shape[1], pos.shape[1]
        pad_b, pad_r = max(0, t_row - t_batch), max(0, t_batch - t_row)
        for mine, theirs in zip(self.cache.layers, new_cache.layers):
            mine.keys = torch.cat([self._pad_left(mine.keys, pad_b, 2), self._pad_left(theirs.keys, pad_r, 2)])
            mine.values = torch.cat([self._pad_left(mine.values, pad_b, 2), self._pad_left(theirs.values, pad_r, 2)])
        self.pos = torch.cat([self._pad_left(self.pos, pad_b, 1), self._pad_left(pos, pad_r, 1)])
        self.valid = torch.cat([self._pad_left(self.valid, pad_b, 1, False), self._pad_left(valid, pad_r, 1, False)])

    def keep_rows(self, keep: list[int]) -> None:
        """Drop every row not in `keep`, then the leading columns that are padding in all remaining rows."""
        if not keep:
            self.cache = self.pos = self.valid = None
            return
        idx = torch.tensor(keep, device=self.pos.device)
        valid = self.valid.index_select(0, idx)
        start = int(valid.any(0).nonzero()[0])
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, idx)[:, :, start:]
            layer.values = layer.values.index_select(0, idx)[:, :, start:]
        self.pos = self.pos.index_select(0, idx)[:, start:]
        self.valid = valid[:, start:]

    def row_kv(self, row: int):
        """A reader of one row's keys and values by position: (start, end) -> per layer (keys, values), copies
        [kv heads, end - start, head dim]. A row's valid columns hold positions 0, 1, ... in order."""
        cols = self.valid[row].nonzero().squeeze(1)

        def read(start: int, end: int):
            idx = cols[start:end]
            return [(layer.keys[row].index_select(1, idx), layer.values[row].index_select(1, idx))
                    for layer in self.cache.layers]
        return read

    def step_inputs(self, next_pos: torch.Tensor):
        """Key positions and validity for a decode step that appends one token per row at `next_pos` [B]."""
        k_pos = torch.cat([self.pos, next_pos[:, None]], dim=1)
        k_valid = torch.cat([self.valid, torch.ones_like(next_pos, dtype=torch.bool)[:, None]], dim=1)
        return k_pos, k_valid

    def commit_step(self, k_pos: torch.Tensor, k_valid: torch.Tensor) -> None:
        self.pos, self.valid = k_pos, k_valid
