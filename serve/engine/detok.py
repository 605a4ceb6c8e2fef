"""Incremental detokenization (as TGI and vLLM do it): each token's text, never half a UTF-8 character."""

from __future__ import annotations


class IncrementalDecoder:
    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        """Add a token; return the text it completes ('' while a multi-byte character is unfinished)."""
        self.ids.append(token_id)
        prefix = self.tok.decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        text = self.tok.decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever text is still held back at the end of the generation."""
        prefix = self.tok.decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        text = self.tok.decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix) :].replace("\ufffd", "")


def find_stop(text: str, new_from: int, stops: list[str]) -> int | None:
    """Index where the earliest stop sequence starts, searching only where new text can complete one."""
    best = None
    for stop in stops:
        i = text.find(stop, max(0, new_from - len(stop) + 1))
        if i >= 0 and (best is None or i < best):
            best = i
    return best
