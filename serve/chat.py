"""The support-chat service: what the HTTP routes and the demo both call, in-process.

It turns a conversation into a prompt with the right system prompt and chat template (the adapter's own,
from its manifest, when it has them: serving then uses what the adapter was trained with).
"""

from __future__ import annotations

from serve.engine.interface import Engine
from serve.engine.types import GenerationRequest, SamplingParams
from serve.errors import AdapterNotFound, InvalidRequest
from serve.handoff import Handoff, HandoffRules


class ChatService:
    def __init__(self, engine: Engine, system_prompt: str, handoff_rules: HandoffRules | None = None, metrics=None):
        self.engine = engine
        self.system_prompt = system_prompt
        self.handoff_rules = handoff_rules or HandoffRules.load()
        self.metrics = metrics

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
        return self._system_prompt(self.engine.adapters().get(adapter) if adapter else None)

    def _system_prompt(self, weights) -> str:
        return (weights.system_prompt if weights and weights.system_prompt else None) or self.system_prompt

    def prompt(self, messages: list[dict], adapter: str | None, weights=None) -> str:
        """The rendered prompt, with the adapter's own system prompt and template (`weights`, when the caller has
        looked the adapter up already). A conversation that ends with the assistant gets a new assistant turn (as
        vLLM does)."""
        if not messages:
            raise InvalidRequest("messages must not be empty", param="messages")
        if weights is None and adapter:
            weights = self.engine.adapters().get(adapter)
        if not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": self._system_prompt(weights)}, *messages]
        template = weights.chat_template if weights and weights.chat_template else None
        try:
            return self.engine.render_chat(messages, template)
        except Exception as exc:  # a template that rejects the conversation (e.g. role order)
            raise InvalidRequest(f"the conversation cannot be formatted: {exc}", param="messages") from exc

    def request(self, messages: list[dict], model: str | None, params: SamplingParams) -> GenerationRequest:
        adapter = self.adapter_for(model)
        weights = self.engine.adapters().get(adapter) if adapter else None  # looked up once for prompt and template
        return GenerationRequest(prompt=self.prompt(messages, adapter, weights), adapter=adapter, params=params)

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
