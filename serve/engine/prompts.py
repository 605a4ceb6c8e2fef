"""What both engines share about prompts: the tokenizer with the kit's chat template, rendering, token counts,
and the length limits every request is checked against (TGI's messages, so clients see the same refusals)."""

from __future__ import annotations

from pathlib import Path

from serve.engine.types import SamplingParams
from serve.errors import InvalidRequest


class PromptFormat:
    def __init__(self, model_dir: Path):
        from transformers import AutoTokenizer

        from common.chat_template import KIT_CHAT_TEMPLATE

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not self.tokenizer.chat_template:  # a base model: the kit's Gemma-style turns
            self.tokenizer.chat_template = KIT_CHAT_TEMPLATE

    def render_chat(self, messages: list[dict], chat_template: str | None = None) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True
        )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))


def check_lengths(n_prompt: int, params: SamplingParams, max_input_tokens: int, max_total_tokens: int) -> None:
    """Refuse an empty prompt, one over the input limit, or one whose answer could not fit the context."""
    if not n_prompt:
        raise InvalidRequest("the prompt is empty", param="inputs")
    if n_prompt > max_input_tokens:
        raise InvalidRequest(f"inputs must have less than {max_input_tokens} tokens. Given: {n_prompt}", param="inputs")
    if n_prompt + params.max_new_tokens > max_total_tokens:
        raise InvalidRequest(
            f"inputs tokens + max_new_tokens must be <= {max_total_tokens}. "
            f"Given: {n_prompt} inputs tokens and {params.max_new_tokens} max_new_tokens", param="max_new_tokens",
        )
