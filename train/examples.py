"""From conversation records to training examples: token ids, assistant-only labels, per-batch padding."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from common.records import Conversation
from train.config import TrainConfig
from train.data.records import fingerprint

IGNORE = -100
GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")  # not `add_generation_prompt`


def load_records(cfg: TrainConfig) -> tuple[list[Conversation], str]:
    """The run's conversations (from a dataset file, or composed offline in memory) and the system prompt."""
    if cfg.data == "offline":
        from train.data.build import content_key, pick_scenarios
        from train.data.glossary import load_glossary, scenarios, system_prompt
        from train.data.offline import generate_offline
        from train.data.records import assign_splits

        system = system_prompt()
        glossary = load_glossary()
        chosen = pick_scenarios(scenarios(glossary), cfg.offline_scenarios, cfg.data_seed)
        splits = assign_splits((s.id for s in chosen), seed=cfg.data_seed)
        rows, seen = [], set()
        for sc, k, messages in generate_offline(chosen, cfg.offline_per_scenario, system, glossary, cfg.data_seed):
            key = content_key(messages)
            if key not in seen:
                seen.add(key)
                rows.append(Conversation(id=f"{sc.id}.{k}", messages=messages, scenario=sc.ref(), split=splits[sc.id]))
        return rows, system
    from train.data.records import read_conversations

    rows = read_conversations(cfg.data)
    systems = {m.content for r in rows for m in r.messages if m.role == "system"}
    return rows, (next(iter(systems)) if len(systems) == 1 else "")


def select_split(rows: list[Conversation], split: str, cap: int | None, seed: int) -> list[Conversation]:
    chosen = [r for r in rows if r.split == split]
    if cap and len(chosen) > cap:
        chosen = random.Random(f"{split}:{seed}").sample(chosen, cap)
    return chosen


def split_fingerprint(train_rows: list[Conversation], val_rows: list[Conversation]) -> str:
    return fingerprint(train_rows + val_rows)


def _prefix_assistant_mask(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """For chat templates without {% generation %}: an assistant turn is what each assistant message adds to
    the rendered conversation (templates render prefixes identically, which this relies on)."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    mask = [0] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=True, add_generation_prompt=True,
                                               return_dict=True)["input_ids"]
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=True, return_dict=True)["input_ids"]
        for j in range(len(before), min(len(upto), len(ids))):
            mask[j] = 1
    return ids, mask


def tokenize(tokenizer, conv: Conversation, max_length: int) -> dict[str, list[int]] | None:
    """input_ids + labels where only the assistant's tokens (incl. its end-of-turn) are targets; None if a
    truncated conversation has no assistant token left."""
    messages = [m.model_dump() for m in conv.messages]
    if GENERATION_TAG.search(tokenizer.chat_template or ""):
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = enc["input_ids"], enc["assistant_masks"]
    else:
        ids, mask = _prefix_assistant_mask(tokenizer, messages)
    ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask):
        return None
    return {"input_ids": ids, "labels": [t if m else IGNORE for t, m in zip(ids, mask)]}


def tokenize_all(tokenizer, rows: list[Conversation], max_length: int) -> list[dict[str, list[int]]]:
    return [ex for ex in (tokenize(tokenizer, r, max_length) for r in rows) if ex is not None]


@dataclass
class PadToLongest:
    """Pads each batch to its own longest example (right padding), never to a fixed length."""

    pad_token_id: int

    def __call__(self, batch: list[dict[str, list[int]]]):
        import torch

        width = max(len(ex["input_ids"]) for ex in batch)
        ids, labels, attn = [], [], []
        for ex in batch:
            pad = width - len(ex["input_ids"])
            ids.append(ex["input_ids"] + [self.pad_token_id] * pad)
            labels.append(ex["labels"] + [IGNORE] * pad)
            attn.append([1] * len(ex["input_ids"]) + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(attn)}
