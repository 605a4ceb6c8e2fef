"""The local engine's output processor: from a row's logits to its next token (penalties, sampling), its text
(incremental detokenizing with tokenizers' DecodeStream), the stop rules, and the row's final result."""

from __future__ import annotations

import random
import time

import torch
from tokenizers.decoders import DecodeStream

from serve.engine.grammar import GrammarCompiler, GrammarState
from serve.engine.sampling import choose, process_logits
from serve.engine.scheduler import Row
from serve.engine.types import GenerationResult, Timings, Token


def find_stop(text: str, new_from: int, stops: list[str]) -> int | None:
    """Index where the earliest stop sequence starts, searching only where new text can complete one."""
    best = None
    for stop in stops:
        i = text.find(stop, max(0, new_from - len(stop) + 1))
        if i >= 0 and (best is None or i < best):
            best = i
    return best


class OutputProcessor:
    def __init__(self, tokenizer, eos_ids: set[int], max_total_tokens: int, device: str):
        self.tokenizer = tokenizer
        self.fast = tokenizer.backend_tokenizer  # what DecodeStream steps through
        self.eos_ids = eos_ids
        self.special_ids = set(tokenizer.all_special_ids)
        self.max_total_tokens = max_total_tokens
        self.device = device
        self.grammars = GrammarCompiler(tokenizer, eos_ids)

    def start(self, row: Row) -> None:
        """A row's sampling state and detokenizer, set when it joins the batch."""
        p = row.req.params
        if p.sampling:
            row.seed = p.seed if p.seed is not None else random.randrange(2**63)
            row.generator = torch.Generator(device=self.device).manual_seed(row.seed % 2**64)  # any size, as TGI's u64
        row.decoder = DecodeStream(skip_special_tokens=True)
        row.next_pos = len(row.prompt_ids)
        # Compiled before the request was queued (GrammarCompiler.compile in its thread): a cache hit here.
        row.grammar = GrammarState(self.grammars.compile(p.grammar)) if p.grammar else None

    def _token(self, tid: int, logprob: float | None) -> Token:
        return Token(tid, self.tokenizer.decode([tid]), logprob, tid in self.special_ids)

    def prefill_details(self, ids: list[int], logits: torch.Tensor) -> list[Token]:
        """Every prompt token with its log-probability given the ones before it (TGI's decoder_input_details)."""
        logprobs = logits.log_softmax(-1)
        return [self._token(ids[0], None)] + [self._token(tid, float(logprobs[i, tid])) for i, tid in enumerate(ids[1:])]

    def next_token(self, row: Row, logits: torch.Tensor) -> Token:
        """Choose the row's next token, extend its text and decide whether it is the last; returns the event."""
        p = row.req.params
        generated = [t.id for t in row.tokens]
        if row.grammar is not None:  # only what the grammar allows, before penalties and sampling
            logits = row.grammar.mask(logits)
        if p.repetition_penalty or p.frequency_penalty or p.presence_penalty or p.sampling:
            context = torch.tensor(row.prompt_ids + generated, device=logits.device)
            logits = process_logits(logits, p, context, generated)
        token_id = choose(logits, p, row.generator)
        if not row.tokens:
            row.first_token = time.monotonic()
        logprob, top = None, None
        if p.logprobs or p.top_n_tokens:
            logprobs = logits.log_softmax(-1)
            logprob = float(logprobs[token_id])
            if p.top_n_tokens:
                values, ids = logprobs.topk(p.top_n_tokens)
                top = [self._token(int(t), float(v)) for v, t in zip(values, ids)]
        row.last_token = token_id
        before = len(row.text)
        # DecodeStream holds back a token that ends inside a UTF-8 character until the character is complete.
        delta = row.decoder.step(self.fast, token_id) or ""
        row.text += delta
        if row.grammar is not None:
            row.grammar.advance(token_id)
        if token_id in self.eos_ids and not p.ignore_eos:
            row.finish_reason = "eos_token"
        elif row.grammar is not None and row.grammar.done:  # complete: only the end could follow, as TGI ends it
            row.finish_reason = "eos_token"
        elif p.stop and (cut := find_stop(row.text, before, p.stop)) is not None:
            row.text = row.text[:cut]
            delta = row.text[before:]
            row.finish_reason = "stop_sequence"
        elif len(row.tokens) + 1 >= p.max_new_tokens or row.next_pos + 1 >= self.max_total_tokens:
            row.finish_reason = "length"
        token = Token(token_id, delta, logprob, token_id in self.special_ids, top, last=row.finish_reason is not None)
        row.tokens.append(token)
        return token

    @staticmethod
    def result(row: Row, now: float, energy_source: str) -> GenerationResult:
        return GenerationResult(
            text=row.text, finish_reason=row.finish_reason, tokens=row.tokens, prompt_tokens=len(row.prompt_ids),
            seed=row.seed, prefill=row.prefill, adapter=row.weights.name if row.weights else None,
            timings=Timings(
                queue_s=(row.admitted or now) - row.arrival, first_token_s=(row.first_token or now) - row.arrival,
                inference_s=now - (row.admitted or now), total_s=now - row.arrival,
            ),
            energy_joules=row.energy["prefill"] + row.energy["decode"], energy_source=energy_source,
            energy_by_phase=dict(row.energy),
        )
