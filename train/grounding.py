"""Grounded training: each conversation gets the knowledge-base entries that serving will retrieve for it,
rendered into its system prompt by common.knowledge (the same code the server runs: train = serve)."""

from __future__ import annotations

from common.knowledge import KnowledgeBase, Retriever, ground, load_knowledge, manifest_section, retrieval_query
from common.records import Conversation
from train.config import TrainConfig


def knowledge_for(cfg: TrainConfig) -> KnowledgeBase | None:
    """The run's knowledge base: None (ungrounded), "kit" (the glossary) or a path."""
    if not cfg.knowledge:
        return None
    return load_knowledge(None if cfg.knowledge == "kit" else cfg.knowledge)


def ground_rows(rows: list[Conversation], kb: KnowledgeBase, k: int) -> list[Conversation]:
    from common.models import cache_dir

    retriever = Retriever(kb, k, cache_dir() / "knowledge")
    convs = [[m.model_dump() for m in r.messages] for r in rows]
    found = retriever.search_many([retrieval_query(c) for c in convs])
    out = []
    for row, messages, entries in zip(rows, convs, found):
        grounded, _ = ground(messages, retriever, entries=entries)
        out.append(Conversation.model_validate({**row.model_dump(exclude_none=True), "messages": grounded}))
    return out


def knowledge_manifest(kb: KnowledgeBase | None, k: int) -> dict | None:
    return manifest_section(kb, k) if kb else None
