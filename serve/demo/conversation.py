"""What the demo page does, without Gradio: model choices, streaming one or two replies, reply footers, feedback.

The page keeps one `Session` per browser tab. Each side (A, and B in compare mode) has its own clean
conversation (what the model sees) and, per reply, what the page shows under it (metrics, hand-off).
"""

from __future__ import annotations

import asyncio
import html
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from serve.api.responses import open_stream
from serve.chat import ChatService
from serve.engine.interface import Engine
from serve.engine.types import GenerationResult, SamplingParams
from serve.errors import AdapterNotFound, ServeError

EXAMPLES = Path(__file__).resolve().parent / "examples.yaml"
SIDES = ("A", "B")
REASONS = {"customer_request": "the customer asked for a person", "reply_escalation": "the reply escalates"}


@dataclass
class Side:
    history: list[dict] = field(default_factory=list)  # [{role, content}], as sent to the model
    notes: dict[int, dict] = field(default_factory=dict)  # reply index -> {model, footer, handoff}


@dataclass
class Session:
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sides: dict[str, Side] = field(default_factory=lambda: {s: Side() for s in SIDES})


def load_examples(path: Path = EXAMPLES) -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["examples"]


def model_choices(chat: ChatService) -> list[tuple[str, str]]:
    """(label, value) pairs: the base model first, then the loaded adapters."""
    base = chat.base_name
    return [(f"{base} (base model)", base)] + [(name, name) for name in sorted(chat.engine.adapters())]


def describe_model(chat: ChatService, model: str) -> str:
    """The system prompt the model gets, and what the adapter is, as Markdown."""
    if model == chat.base_name:
        head = f"**{model}**: the base model, without an adapter."
        prompt = chat.system_prompt
    else:
        weights = chat.engine.adapters().get(model)
        if weights is None:
            return f"**{model}** is not loaded any more: pick another model."
        head = f"**{model}**: LoRA r={weights.rank} on {', '.join(weights.target_modules)}."
        manifest = weights.manifest or {}
        metrics = manifest.get("metrics") or {}
        if manifest.get("version"):
            head += f" Version {manifest['version']}."
        if metrics.get("val_loss") is not None:
            head += f" Validation loss {metrics['val_loss']:.3f}."
        prompt = chat.system_prompt_for(model)
    return f"{head}\n\n> {html.escape(prompt)}"


def default_max_tokens(chat, model: str, fallback: int, ceiling: int) -> int:
    """The page's "Max new tokens" for a model: room for its own replies (the longest training reply, else 1.5x
    the 90th percentile, from the manifest), rounded up to 32; `fallback` when the manifest does not say."""
    weights = chat.engine.adapters().get(model) if model and model != chat.base_name else None
    lengths = ((weights.manifest or {}).get("training") or {}).get("reply_tokens") if weights else None
    if not lengths:
        return min(fallback, ceiling)
    room = max(int(lengths.get("max") or 0), int(1.5 * (lengths.get("p90") or 0)))
    return max(64, min(ceiling, -(-room // 32) * 32))


def sources_html(sources) -> str:
    """The knowledge-base entries a reply was grounded in (empty for a model served ungrounded)."""
    if not sources:
        return ""
    items = "".join(f"<li><code>{html.escape(e.id)}</code> {html.escape(e.title)}</li>" for e in sources)
    return f"<div class='reply-sources'><span>Sources</span><ul>{items}</ul></div>"


def footer(result: GenerationResult, handoff, sources=()) -> str:
    """The lines under a reply: sources, latency, time to first token, tokens, energy and its source, a mark
    when the reply was cut at the token limit, hand-off."""
    t = result.timings
    energy = "n/a" if result.energy_joules is None else f"{result.energy_joules:.3g} J"
    parts = [
        f"<span title='total latency'>latency {t.total_s:.2f} s</span>",
        f"<span title='time to first token'>first token {t.first_token_s:.2f} s</span>",
        f"<span title='prompt + generated tokens'>{result.generated_tokens} tokens ({result.prompt_tokens} in)</span>",
        f"<span title='energy of this reply, and where the figure comes from'>energy {energy} ({result.energy_source})</span>",
    ]
    line = " · ".join(parts)
    if result.finish_reason == "length":
        line += ("<br><span class='cut' title='raise Max new tokens under Generation to let it finish'>"
                 f"Cut at the limit of {result.generated_tokens} new tokens: the reply did not finish</span>")
    if handoff.flagged:
        line += f"<br><span class='handoff'>Hand-off to a human: {REASONS.get(handoff.reason, handoff.reason)}</span>"
    return sources_html(sources) + f"<div class='reply-metrics'>{line}</div>"


def display(side: Side, question: str | None = None, streaming: str | None = None) -> list[dict]:
    """Chatbot messages: the history with each reply's footer, then the question and the reply being written."""
    shown = []
    for i, m in enumerate(side.history):
        note = side.notes.get(i)
        content = m["content"] + ("\n\n" + note["footer"] if note else "")
        shown.append({"role": m["role"], "content": content})
    if streaming is not None:
        shown.append({"role": "user", "content": question or ""})
        shown.append({"role": "assistant", "content": streaming + " …"})
    return shown


_DONE = object()


async def _merge(streams: dict[str, object]):
    """Interleave several async iterators; yields (key, event, error). Cancelling the consumer cancels all."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(key, it):
        try:
            async for event in it:
                await queue.put((key, event, None))
        except Exception as exc:  # reported on the page, next to the side it belongs to
            await queue.put((key, None, exc))
        finally:
            await it.aclose()  # a side cut short frees its row
            await queue.put((key, _DONE, None))

    tasks = [asyncio.create_task(pump(k, it)) for k, it in streams.items()]
    try:
        left = len(tasks)
        while left:
            key, event, error = await queue.get()
            if event is _DONE:
                left -= 1
                continue
            yield key, event, error
    finally:
        for task in tasks:
            task.cancel()


def error_text(model: str, exc: Exception) -> str:
    if isinstance(exc, AdapterNotFound):
        return (f"**{model}** is not loaded (it may have been unloaded or removed from the adapter store meanwhile). "
                "Pick another model: the list is up to date.")
    if isinstance(exc, ServeError):
        return f"**{model}**: {exc.message}"
    return f"**{model}**: the reply failed ({type(exc).__name__})."


async def send(chat: ChatService, engine: Engine, timeout_s: float, session: Session, message: str, models: dict[str, str],
               params: SamplingParams):
    """Answer `message` on each side in `models` ({"A": model, "B": model}); yields after every token.

    Yields (streaming texts by side, errors by side). A side whose model fails keeps its history unchanged.
    """
    texts: dict[str, str] = {}
    errors: dict[str, str] = {}
    requests = {}
    for side, model in models.items():
        messages = [*session.sides[side].history, {"role": "user", "content": message}]
        try:
            requests[side] = (messages, *chat.grounded_request(messages, model, params))
        except ServeError as exc:
            errors[side] = error_text(model, exc)
    streams = {}
    for side, (_, req, _) in list(requests.items()):
        try:
            streams[side] = await open_stream(engine, req, timeout_s)
        except ServeError as exc:
            errors[side] = error_text(models[side], exc)
    for side in streams:
        texts[side] = ""
    yield texts, errors
    async for side, event, exc in _merge(streams):
        if exc is not None:
            errors[side] = error_text(models[side], exc)
            texts.pop(side, None)
        elif isinstance(event, GenerationResult):
            messages, req, sources = requests[side]
            handoff = chat.handoff_for_messages(messages, event.text, req.adapter)
            state = session.sides[side]
            state.history = [*messages, {"role": "assistant", "content": event.text}]
            state.notes[len(state.history) - 1] = {"model": models[side], "footer": footer(event, handoff, sources),
                                                   "handoff": handoff.flagged, "sources": [e.id for e in sources]}
            texts.pop(side, None)
        elif event.text:
            texts[side] += event.text
        yield texts, errors


def rate(store, session: Session, side: str, index: int, liked: bool | None) -> str | None:
    """Store a thumbs up/down for reply `index` of `side` (None: remove it); returns the feedback row's id."""
    if store is None:
        raise ValueError("feedback is not stored on this server: it has no writable feedback database")
    state = session.sides[side]
    note = state.notes.get(index)
    if note is None:
        raise ValueError("only the assistant's replies can be rated")
    if liked is None:
        store.clear(session.id, index, side)
        return None
    return store.rate(session.id, index, note["model"], 1 if liked else -1, state.history,
                      side=side, handoff=note["handoff"])
