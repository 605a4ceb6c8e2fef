"""The local engine's prefix cache: the keys and values of prompt prefixes that earlier requests computed, so that
the next turn of a chat (which re-sends the whole history) prefills only what is new.

Block-granular, after vLLM's automatic prefix caching: a block is `block_size` consecutive tokens, keyed by the
adapter that computed it, its parent block and its own tokens, so a block is found only after the same adapter
saw the same tokens before it (an adapter changes every layer's keys and values). Blocks hold every layer's full
keys and values (sliding-window layers too: the window is applied by the attention mask, from positions), so a
hit is exact whatever the layer type. Least recently used blocks go first when the memory bound is reached; a
block is always touched after its children, so eviction takes leaves before the blocks they extend.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass

import torch

BASE_MODEL = 0  # the adapter key of rows without an adapter (adapters' keys start at 1)


@dataclass(eq=False)
class Block:
    id: int
    key: tuple  # (adapter key, parent block id, the block's tokens)
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [kv heads, block_size, head dim]
    nbytes: int


@dataclass
class PrefixStats:
    blocks: int = 0
    bytes: int = 0
    capacity_bytes: int = 0
    evicted_blocks: int = 0


class PrefixCache:
    def __init__(self, max_bytes: int, block_size: int = 32):
        self.max_bytes, self.block_size = max_bytes, block_size
        self.blocks: collections.OrderedDict[tuple, Block] = collections.OrderedDict()  # least recently used first
        self.used = 0
        self.evicted = 0
        self._ids = itertools.count(1)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def stats(self) -> PrefixStats:
        return PrefixStats(len(self.blocks), self.used, self.max_bytes, self.evicted)

    def _tokens(self, ids: list[int], n_blocks: int):
        b = self.block_size
        return (tuple(ids[i * b:(i + 1) * b]) for i in range(n_blocks))

    def match(self, adapter: int, ids: list[int], limit: int) -> list[Block]:
        """The cached blocks that start `ids` (at most `limit` tokens of them), most recently used from now."""
        if not self.enabled:
            return []
        found, parent = [], 0
        for tokens in self._tokens(ids, limit // self.block_size):
            block = self.blocks.get((adapter, parent, tokens))
            if block is None:
                break
            found.append(block)
            parent = block.id
        self._touch(found)
        return found

    def insert(self, adapter: int, ids: list[int], kv_of) -> int:
        """Cache the full blocks of `ids`, whose keys and values `kv_of(start, end)` returns per layer (copies
        that the cache may keep). Returns how many blocks were added; stops early where memory runs out."""
        if not self.enabled:
            return 0
        chain, added, parent = [], 0, 0
        for i, tokens in enumerate(self._tokens(ids, len(ids) // self.block_size)):
            key = (adapter, parent, tokens)
            block = self.blocks.get(key)
            if block is None:
                kv = kv_of(i * self.block_size, (i + 1) * self.block_size)
                nbytes = sum(k.nbytes + v.nbytes for k, v in kv)
                if not self._make_room(nbytes, keep=chain):
                    break
                block = Block(next(self._ids), key, kv, nbytes)
                self.blocks[key] = block
                self.used += nbytes
                added += 1
            else:
                self.blocks.move_to_end(key)  # out of eviction's way while this chain grows
            chain.append(block)
            parent = block.id
        self._touch(chain)
        return added

    def _make_room(self, nbytes: int, keep: list[Block]) -> bool:
        keep_ids = {b.id for b in keep}
        while self.used + nbytes > self.max_bytes:
            if not self.blocks:
                return False
            oldest = next(iter(self.blocks.values()))
            if oldest.id in keep_ids:  # only the chain being added is left: it cannot grow
                return False
            self._remove(oldest)
            self.evicted += 1
        return True

    def _remove(self, block: Block) -> None:
        del self.blocks[block.key]
        self.used -= block.nbytes

    def _touch(self, chain: list[Block]) -> None:
        for block in reversed(chain):  # deepest first: each parent ends up more recent than its children
            self.blocks.move_to_end(block.key)

    def drop(self, adapter: int) -> int:
        """Forget every block that `adapter` computed (unloaded or replaced). Returns how many."""
        gone = [b for key, b in self.blocks.items() if key[0] == adapter]
        for block in gone:
            self._remove(block)
        return len(gone)


def past_of(blocks: list[Block]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the keys and values of a chain of blocks, joined along the sequence [kv heads, tokens, head dim]."""
    if not blocks:
        return []
    return [
        (torch.cat([b.kv[layer][0] for b in blocks], dim=1), torch.cat([b.kv[layer][1] for b in blocks], dim=1))
        for layer in range(len(blocks[0].kv))
    ]
