"""Structured output: a request's grammar (a JSON schema, any JSON object, or a regular expression) compiled with
outlines-core into an index over the model's vocabulary, and each row's walk through it, one token at a time.

Compiling walks the whole vocabulary (seconds on a 262k-token vocabulary), so it happens in the request's thread
before the request is queued, and compiled indexes are kept in a small LRU per tokenizer: the engine loop only
reads a bitmask of allowed tokens per step and advances a state.
"""

from __future__ import annotations

import collections
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from serve.engine.schema_support import enforceable
from serve.errors import InvalidRequest

# Whitespace between JSON tokens: at most one space, so that a weak model cannot pad its output forever.
JSON_WHITESPACE = r"[ ]?"
ANY_JSON_OBJECT: dict = {"type": "object"}
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _outlines():
    try:
        import outlines_core
    except ImportError as exc:  # an install without the serve extra
        raise InvalidRequest("structured output needs the outlines-core package (pip install 'supportkit[serve]')") from exc
    return outlines_core


@dataclass
class Grammar:
    """What a request's output must match. `value`: the JSON schema as JSON text (json_schema), the pattern (regex),
    "" (json_object). `where` names the request field it came from (for errors); `compiled` is set by the compiler
    that prepared it for an engine."""

    kind: str  # json_schema | json_object | regex
    value: str = ""
    where: str = field(default="grammar", compare=False)
    compiled: Any = field(default=None, compare=False, repr=False)
    _regex: str | None = field(default=None, compare=False, repr=False)  # built once: at parsing, reused to compile

    @classmethod
    def json_schema(cls, schema: Any, where: str) -> Grammar:
        """A grammar for a JSON schema (an object); checked now."""
        if not isinstance(schema, dict):
            raise InvalidRequest(f"{where}: a JSON schema must be an object, not {type(schema).__name__}", where)
        grammar = cls("json_schema", json.dumps(schema, separators=(",", ":"), ensure_ascii=False), where)
        grammar.regex()  # refuses what outlines-core cannot turn into a regular expression
        return grammar

    @classmethod
    def json_object(cls) -> Grammar:
        return cls("json_object")

    @classmethod
    def pattern(cls, regex: Any, where: str) -> Grammar:
        if not isinstance(regex, str) or not regex:
            raise InvalidRequest(f"{where}: a regex grammar needs a non-empty string", where)
        return cls("regex", regex, where)

    @property
    def schema(self) -> Any:
        """The JSON schema (json_object: any object), for engines that pass it on."""
        return json.loads(self.value) if self.kind == "json_schema" else ANY_JSON_OBJECT

    def regex(self) -> str:
        if self._regex is None:
            self._regex = self._build_regex()
        return self._regex

    def _build_regex(self) -> str:
        where = self.where
        if self.kind == "regex":
            return self.value
        if self.kind == "json_object":
            return any_json_object_regex()
        schema = json.dumps(enforceable(json.loads(self.value), where))
        try:
            return _outlines().json_schema.build_regex_from_schema(schema, JSON_WHITESPACE)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise InvalidRequest(f"{where}: unsupported or invalid JSON schema: {exc}", where) from None


def any_json_object_regex() -> str:
    """A JSON object whose values are scalars, or arrays or objects of scalars. A regular expression cannot match
    brackets to any depth, and outlines' own `{"type": "object"}` (deeper) takes ~5x longer to compile."""
    js = _outlines().json_schema
    w = JSON_WHITESPACE
    scalar = f"({js.STRING}|{js.NUMBER}|{js.BOOLEAN}|{js.NULL})"

    def obj(value: str) -> str:
        return rf"\{{{w}({js.STRING}{w}:{w}{value}({w},{w}{js.STRING}{w}:{w}{value})*)?{w}\}}"

    array = rf"\[{w}({scalar}({w},{w}{scalar})*)?{w}\]"
    return obj(f"({scalar}|{array}|{obj(scalar)})")


def token_bytes(tokenizer) -> dict[int, bytes]:
    """Each ordinary token's bytes (special tokens left out): byte-level BPE pieces through GPT-2's byte map,
    SentencePiece pieces with their '▁' spaces and <0xNN> byte tokens."""
    decoder = tokenizer.backend_tokenizer.decoder
    byte_level = decoder is not None and b"ByteLevel" in decoder.__getstate__()
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    if byte_level:  # GPT-2's byte-level alphabet: each byte as the printable character BPE writes it as
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        to_byte = {c: b for b, c in bytes_to_unicode().items()}
    out: dict[int, bytes] = {}
    for piece, tid in tokenizer.get_vocab().items():
        if tid in special or not piece:
            continue
        if byte_level:
            if all(c in to_byte for c in piece):
                out[tid] = bytes(to_byte[c] for c in piece)
            else:  # an added token written as plain text
                out[tid] = piece.encode()
        elif m := _BYTE_PIECE.match(piece):
            out[tid] = bytes([int(m.group(1), 16)])
        else:
            out[tid] = piece.replace("\u2581", " ").encode()
    return out


@dataclass
class CompiledGrammar:
    index: Any  # outlines_core.Index
    compiler: GrammarCompiler
    done_states: dict[int, bool] = field(default_factory=dict)  # final states with nothing left but EOS

    def is_done(self, state: int) -> bool:
        if state not in self.done_states:
            allowed = self.index.get_allowed_tokens(state) if self.index.is_final_state(state) else None
            self.done_states[state] = allowed is not None and set(allowed) <= {self.compiler.eos_id}
        return self.done_states[state]


class GrammarCompiler:
    """Compiles grammars for one tokenizer; the last `cache_size` indexes are kept."""

    def __init__(self, tokenizer, eos_ids: set[int], cache_size: int = 16):
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else min(eos_ids)
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[tuple[str, str], CompiledGrammar] = collections.OrderedDict()
        self._vocabulary = None
        self.vocab_size = 0
        self._lock = threading.Lock()  # the cache
        self._build_lock = threading.Lock()

    def _vocab(self):
        if self._vocabulary is None:
            pieces = token_bytes(self.tokenizer)
            merged: dict[bytes, list[int]] = collections.defaultdict(list)
            for tid, raw in pieces.items():
                if tid not in self.eos_ids:
                    merged[raw].append(tid)
            self.vocab_size = max([*pieces, *self.eos_ids]) + 1
            self._vocabulary = _outlines().Vocabulary(self.eos_id, dict(merged))
        return self._vocabulary

    def compile(self, grammar: Grammar) -> CompiledGrammar:
        """The grammar's index (built now, or from the cache); attached to the grammar. InvalidRequest if it cannot be.
        A grammar already compiled here returns at once, without a lock (the engine loop's case)."""
        if grammar.compiled is not None and grammar.compiled.compiler is self:
            return grammar.compiled
        key = (grammar.kind, grammar.value)
        compiled = self._cached(key)
        if compiled is None:
            with self._build_lock:  # one build at a time: a burst of requests with one new schema builds it once
                compiled = self._cached(key)
                if compiled is None:
                    compiled = CompiledGrammar(self._index(grammar), self)
                    with self._lock:
                        self._cache[key] = compiled
                        while len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
        grammar.compiled = compiled
        return compiled

    def _cached(self, key: tuple[str, str]) -> CompiledGrammar | None:
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
            return compiled

    def _index(self, grammar: Grammar):
        regex = grammar.regex()
        try:
            return _outlines().Index(regex, self._vocab())
        except (ValueError, TypeError, RuntimeError) as exc:
            where = grammar.where
            raise InvalidRequest(f"{where}: cannot be enforced with this model's vocabulary: {exc}", where) from None


class GrammarState:
    """One row's position in its grammar: masks its logits to the allowed tokens and advances with each choice."""

    def __init__(self, compiled: CompiledGrammar):
        self.compiled = compiled
        self.guide = _outlines().Guide(compiled.index)
        self.words = np.zeros((compiled.compiler.vocab_size + 31) // 32, dtype=np.int32)
        self.eos_ids = np.array(sorted(compiled.compiler.eos_ids))

    def allowed(self, size: int) -> np.ndarray:
        """A bool per token id below `size`: may it come next? (Every EOS id wherever the grammar allows the end.)"""
        self.guide.write_mask_into(self.words.ctypes.data, self.words.size, self.words.itemsize)
        bits = np.unpackbits(self.words.view(np.uint8), bitorder="little").view(bool)
        keep = np.zeros(size, dtype=bool)
        n = min(bits.size, size)
        keep[:n] = bits[:n]
        eos_id = self.compiled.compiler.eos_id
        if eos_id < size and keep[eos_id]:
            keep[self.eos_ids[self.eos_ids < size]] = True
        return keep

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits [V] with every token the grammar forbids at -inf."""
        keep = self.allowed(logits.numel())
        if logits.device.type == "cpu" and logits.dtype == torch.float32:  # numpy is several times faster here
            return torch.from_numpy(np.where(keep, logits.numpy(), np.float32("-inf")))
        return logits.masked_fill(~torch.from_numpy(keep).to(logits.device), float("-inf"))

    def advance(self, token_id: int) -> None:
        if token_id in self.compiled.compiler.eos_ids:
            return  # the row ends here
        self.guide.advance(token_id, return_tokens=False)

    @property
    def done(self) -> bool:
        """The output is complete: the grammar allows nothing more but the end."""
        return self.compiled.is_done(self.guide.get_state())
