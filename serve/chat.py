"""The support-chat service: what the HTTP routes and the demo both call, in-process.

It turns a conversation into a prompt with the right system prompt and chat template (the adapter's own,
from its manifest, when it has them: serving then uses what the adapter was trained with). An adapter whose
manifest says it was trained grounded (`knowledge`: fingerprint and k) gets the top-k knowledge-base entries
in its system prompt, rendered by common.knowledge exactly as at training; every other model is served as
before. The entries used are returned with the request, so that responses can name their sources.
"""

from __future__ import annotations

import logging
import time

from common.knowledge import Entry, KnowledgeBase, Retriever, ground, render_system, retrieval_query
from serve.engine.interface import Engine
from serve.engine.types import GenerationRequest, SamplingParams
from serve.errors import AdapterInvalid, AdapterNotFound, InvalidRequest
from serve.handoff import Handoff, HandoffRules

log = logging.getLogger("supportkit.chat")


class ChatService:
    def __init__(self, engine: Engine, system_prompt: str, handoff_rules: HandoffRules | None = None, metrics=None,
                 knowledge: KnowledgeBase | None = None, knowledge_cache=None):
        self.engine = engine
        self.system_prompt = system_prompt
        self.handoff_rules = handoff_rules or HandoffRules.load()
        self.metrics = metrics
        self.knowledge = knowledge
        self.knowledge_cache = knowledge_cache
        self._retrievers: dict[int, Retriever] = {}
        self._warned: set[tuple[str, str]] = set()

    @property
    def base_name(self) -> str:
        return self.engine.name

    def adapter_for(self, model: str | None) -> str | None:
        """`model` is the base model's name (or empty) for the base model, else an adapter's name."""
        if not model or model == self.base_name:
            return None
        if model not in self.engine.adapters():
            raise AdapterNotFound(
                f"model {model!r} does not exist: it is neither the base model {self.base_name!r} nor a loaded adapter "
                "(GET /v1/models lists them)"
            )
        return model

    def system_prompt_for(self, adapter: str | None) -> str:
        weights = self.engine.adapters().get(adapter) if adapter else None
        return (weights.system_prompt if weights and weights.system_prompt else None) or self.system_prompt

    # --- grounding -------------------------------------------------------------------------------------------
    def retriever_for(self, adapter: str | None) -> Retriever | None:
        """The retriever of an adapter trained grounded, None for every other model. An adapter trained grounded
        on a server without a knowledge base is refused (logged, and a clear error for that adapter only)."""
        weights = self.engine.adapters().get(adapter) if adapter else None
        section = ((weights.manifest or {}).get("knowledge") if weights else None) or None
        if not section:
            return None
        if self.knowledge is None:
            message = (f"adapter {adapter!r} was trained with a knowledge base, but this server has none "
                       "(SUPPORTKIT_SERVE_KNOWLEDGE names one; the default is the kit's glossary)")
            self._warn_once(adapter, "none", message)
            raise AdapterInvalid(message)
        if section.get("fingerprint") and section["fingerprint"] != self.knowledge.fingerprint:
            self._warn_once(adapter, section["fingerprint"],
                            f"adapter {adapter!r} was trained with knowledge base {section['fingerprint']}; serving "
                            f"{self.knowledge.source} ({self.knowledge.fingerprint}) in the same format")
        k = int(section.get("k") or 2)
        if k not in self._retrievers:
            self._retrievers[k] = Retriever(self.knowledge, k, self.knowledge_cache)
        return self._retrievers[k]

    def _warn_once(self, adapter: str, key: str, message: str) -> None:
        if (adapter, key) not in self._warned:
            self._warned.add((adapter, key))
            log.warning(message)

    def warm_knowledge(self) -> None:
        """Build the retrieval index now if any loaded adapter is grounded (start-up), not on a first request."""
        for name in list(self.engine.adapters()):
            try:
                retriever = self.retriever_for(name)
            except AdapterInvalid:
                continue
            if retriever is not None:
                retriever.index()

    def _retrieve(self, retriever: Retriever, query: str, adapter: str | None) -> list[Entry]:
        started = time.perf_counter()
        entries = retriever.search(query)
        if self.metrics is not None and hasattr(self.metrics, "retrieval"):
            self.metrics.retrieval(adapter, time.perf_counter() - started)
        return entries

    # --- prompts ---------------------------------------------------------------------------------------------
    def grounded_messages(self, messages: list[dict], adapter: str | None) -> tuple[list[dict], list[Entry]]:
        """The conversation with its system prompt (the client's, else the adapter's or the server's), grounded
        for an adapter trained grounded; and the knowledge-base entries used."""
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        if system is None:
            system = self.system_prompt_for(adapter)
            messages = [{"role": "system", "content": system}, *messages]
        retriever = self.retriever_for(adapter)
        if retriever is None:
            return messages, []
        entries = self._retrieve(retriever, retrieval_query(messages), adapter)
        return ground(messages, retriever, system=system, entries=entries)

    def prompt_and_sources(self, messages: list[dict], adapter: str | None) -> tuple[str, list[Entry]]:
        """The rendered prompt, with the adapter's own system prompt and template, and the entries it was grounded
        on. A conversation that ends with the assistant gets a new assistant turn (as vLLM does)."""
        if not messages:
            raise InvalidRequest("messages must not be empty", param="messages")
        messages, entries = self.grounded_messages(messages, adapter)
        weights = self.engine.adapters().get(adapter) if adapter else None
        template = weights.chat_template if weights and weights.chat_template else None
        try:
            return self.engine.render_chat(messages, template), entries
        except Exception as exc:  # a template that rejects the conversation (e.g. role order)
            raise InvalidRequest(f"the conversation cannot be formatted: {exc}", param="messages") from exc

    def prompt(self, messages: list[dict], adapter: str | None) -> str:
        return self.prompt_and_sources(messages, adapter)[0]

    def grounded_request(self, messages: list[dict], model: str | None,
                         params: SamplingParams) -> tuple[GenerationRequest, list[Entry]]:
        adapter = self.adapter_for(model)
        prompt, entries = self.prompt_and_sources(messages, adapter)
        return GenerationRequest(prompt=prompt, adapter=adapter, params=params), entries

    def request(self, messages: list[dict], model: str | None, params: SamplingParams) -> GenerationRequest:
        return self.grounded_request(messages, model, params)[0]

    def ground_text(self, prompt: str, adapter: str | None) -> tuple[str, list[Entry]]:
        """A prompt sent as text (TGI's routes) for an adapter trained grounded: when it holds the adapter's
        system prompt, the entries for its last customer turn go after it, as the chat routes render them."""
        retriever = self.retriever_for(adapter)
        system = self.system_prompt_for(adapter)
        if retriever is None or not system or system not in prompt:
            return prompt, []
        entries = self._retrieve(retriever, self.handoff_rules.last_user_turn(prompt), adapter)
        return prompt.replace(system, render_system(system, entries), 1), entries

    # --- hand-off --------------------------------------------------------------------------------------------
    def handoff(self, customer_text: str, reply_text: str, adapter: str | None) -> Handoff:
        """Flag a turn that hands the customer to a human (counted in the hand-off metric)."""
        verdict = self.handoff_rules.check(customer_text, reply_text)
        if verdict.flagged and self.metrics is not None:
            self.metrics.handoff(adapter)
        return verdict

    def handoff_for_messages(self, messages: list[dict], reply_text: str, adapter: str | None) -> Handoff:
        last_user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        return self.handoff(last_user, reply_text, adapter)

    def handoff_for_prompt(self, prompt: str, reply_text: str, adapter: str | None) -> Handoff:
        return self.handoff(self.handoff_rules.last_user_turn(prompt), reply_text, adapter)


def sources_json(entries: list[Entry]) -> list[dict]:
    """The sources of a reply as responses carry them: id and title of each knowledge-base entry used."""
    return [{"id": e.id, "title": e.title} for e in entries]
