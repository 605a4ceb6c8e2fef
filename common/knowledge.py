"""The knowledge base: entries retrieved for a conversation and rendered into the system prompt.

One module for training and serving, so that an adapter sees at serving exactly the prompt it was trained on
(train = serve): `ground(messages, retriever)` retrieves the top-k entries for the conversation's user turns
and renders them after the system prompt in one fixed format:

    <system prompt>

    Knowledge base:
    [id] Title: text
    [id] Title: text

Where entries come from (`load_knowledge`):
- nothing given: the kit's glossary (train/configs/glossary.yaml; one entry per term: its definition, and its
  answer to account questions when it has one; its symptom phrasings and questions help retrieval only);
- a file or a folder of files, each entry `{id, title, text, tags?, examples?}` (`examples`: questions or
  phrasings that should find the entry; used for retrieval, never rendered):
  - `*.yaml` / `*.yml`: a list of entries, or `{entries: [...]}`, or a glossary (`terms: [...]`);
  - `*.jsonl`: one entry per line;
  - `*.md`: one entry per file: optional front matter (`---` YAML with id, title, tags, examples `---`),
    then the text; without front matter the id is the file name and the title its first `# heading`.
A malformed entry or an empty knowledge base is a `KnowledgeError` naming the file (and line) and the fix.

Retrieval embeds each entry (title + text, and each example) with all-MiniLM-L6-v2 (common.embedding); an
entry's score is its best-matching key. The index is cached on disk by the knowledge base's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_GLOSSARY = Path(__file__).resolve().parent.parent / "train" / "configs" / "glossary.yaml"
HEADER = "Knowledge base:"
DEFAULT_K = 2
MAX_TEXT_CHARS = 1200  # an entry is a paragraph an agent can read out, not a manual


class KnowledgeError(ValueError):
    """The knowledge base cannot be used; the message names the file and what to fix."""


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    tags: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)

    def rendered(self) -> str:
        return f"[{self.id}] {self.title}: {' '.join(self.text.split())}"


@dataclass(frozen=True)
class KnowledgeBase:
    entries: tuple[Entry, ...]
    source: str  # "kit glossary" or the path given

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for e in self.entries:
            h.update(json.dumps(e.model_dump(), sort_keys=True).encode())
        return "sha256:" + h.hexdigest()[:32]

    def by_id(self, entry_id: str) -> Entry:
        return next(e for e in self.entries if e.id == entry_id)


def _entry(raw, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise KnowledgeError(f"{where}: an entry must be a mapping with id, title and text")
    try:
        return Entry.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "entry"
        raise KnowledgeError(f"{where}: entry {raw.get('id', '?')!r}: {field}: {err['msg']} "
                             "(an entry is {id, title, text, tags?, examples?})") from None


def _from_glossary(data: dict, where: str) -> list[Entry]:
    out = []
    for t in data.get("terms") or []:
        try:
            text = t["definition"] + (f" {t['answer']}" if t.get("answer") else "")
            examples = [t["symptom"], *t.get("symptoms", []), *t.get("questions", [])]
            out.append(_entry({"id": t["id"], "title": t["term"], "text": text, "examples": examples}, where))
        except (KeyError, TypeError) as exc:
            raise KnowledgeError(f"{where}: glossary term {t!r:.60} lacks {exc}") from None
    return out


def _from_yaml(path: Path) -> list[Entry]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"{path} is not valid YAML: {exc}") from None
    if isinstance(data, dict) and "terms" in data:
        return _from_glossary(data, str(path))
    if isinstance(data, dict) and "entries" in data:
        data = data["entries"]
    if not isinstance(data, list):
        raise KnowledgeError(f"{path}: expected a list of entries, {{entries: [...]}} or a glossary (terms: [...])")
    return [_entry(raw, f"{path} (entry {i + 1})") for i, raw in enumerate(data)]


def _from_jsonl(path: Path) -> list[Entry]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KnowledgeError(f"{path}:{n} is not valid JSON: {exc.msg}") from None
        out.append(_entry(raw, f"{path}:{n}"))
    return out


FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


def _from_markdown(path: Path) -> list[Entry]:
    text = path.read_text()
    meta: dict = {}
    m = FRONT_MATTER.match(text)
    if m:
        try:
            meta = yaml.safe_load(m.group(1)) or {}
        except yaml.YAMLError as exc:
            raise KnowledgeError(f"{path}: its front matter is not valid YAML: {exc}") from None
        if not isinstance(meta, dict):
            raise KnowledgeError(f"{path}: its front matter must be a mapping (id, title, tags, examples)")
        text = text[m.end():]
    heading = re.match(r"\s*#\s+(.+)\n", text)
    if heading:
        meta.setdefault("title", heading.group(1).strip())
        text = text[heading.end():]
    meta.setdefault("id", path.stem)
    return [_entry({**meta, "text": " ".join(text.split())}, str(path))]


READERS = {".yaml": _from_yaml, ".yml": _from_yaml, ".jsonl": _from_jsonl, ".md": _from_markdown}


def load_knowledge(path: str | Path | None = None) -> KnowledgeBase:
    """The knowledge base at `path` (a file or a folder of them), or the kit's glossary."""
    if path is None:
        files, source = [DEFAULT_GLOSSARY], "kit glossary"
    else:
        path, source = Path(path), str(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in READERS and p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            if path.suffix not in READERS:
                raise KnowledgeError(f"{path}: knowledge files are {', '.join(READERS)}")
            files = [path]
        else:
            raise KnowledgeError(f"knowledge base {path} does not exist (a folder of .yaml/.jsonl/.md entries)")
    entries: list[Entry] = []
    for f in files:
        entries += READERS[f.suffix](f)
    if not entries:
        raise KnowledgeError(f"knowledge base {source} has no entries; add .yaml, .jsonl or .md entries")
    ids = [e.id for e in entries]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise KnowledgeError(f"knowledge base {source}: duplicate entry ids: {', '.join(dupes)}")
    return KnowledgeBase(tuple(entries), source)


class Retriever:
    """Top-k entries for a query by MiniLM cosine; the entry index is built once and cached on disk."""

    def __init__(self, kb: KnowledgeBase, k: int = DEFAULT_K, cache_dir: Path | None = None):
        if k < 1:
            raise KnowledgeError("k (entries per prompt) must be at least 1")
        self.kb, self.k = kb, k
        self.cache_dir = cache_dir
        self._index = None
        self._owners: list[int] = []
        self._lock = threading.Lock()

    def _keys(self) -> tuple[list[str], list[int]]:
        texts, owners = [], []
        for i, e in enumerate(self.kb.entries):
            for t in [f"{e.title}: {e.text}", *e.examples]:
                texts.append(t)
                owners.append(i)
        return texts, owners

    def index(self):
        """The key embeddings (built, or read from the cache)."""
        import numpy as np

        from common.embedding import MODEL_NAME, embed

        with self._lock:
            if self._index is not None:
                return self._index
            texts, owners = self._keys()
            cached = None
            if self.cache_dir:
                cached = Path(self.cache_dir) / f"{self.kb.fingerprint.split(':')[1]}-{MODEL_NAME}.npy"
                if cached.is_file():
                    matrix = np.load(cached)
                    if matrix.shape[0] == len(texts):
                        self._index, self._owners = matrix, owners
                        return matrix
            matrix = embed(texts)
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(".tmp.npy")
                np.save(tmp, matrix)
                tmp.replace(cached)
            self._index, self._owners = matrix, owners
            return matrix

    def search(self, query: str, k: int | None = None) -> list[Entry]:
        import numpy as np

        from common.embedding import embed

        k = k or self.k
        index = self.index()
        scores = index @ embed([query])[0]
        best = np.full(len(self.kb.entries), -1.0, dtype=np.float32)
        np.maximum.at(best, np.asarray(self._owners), scores)
        order = sorted(range(len(best)), key=lambda i: (-float(best[i]), i))  # ties: knowledge-base order
        return [self.kb.entries[i] for i in order[:k]]

    def search_many(self, queries: list[str], k: int | None = None) -> list[list[Entry]]:
        """Batched search (training grounds thousands of conversations)."""
        import numpy as np

        from common.embedding import embed

        k = k or self.k
        index = self.index()
        owners = np.asarray(self._owners)
        out = []
        for q in embed(queries) if queries else []:
            best = np.full(len(self.kb.entries), -1.0, dtype=np.float32)
            np.maximum.at(best, owners, index @ q)
            order = sorted(range(len(best)), key=lambda i: (-float(best[i]), i))
            out.append([self.kb.entries[i] for i in order[:k]])
        return out


def retrieval_query(messages: list[dict]) -> str:
    """What is searched: the customer's turns so far (for a training conversation: those before its last
    reply, which is exactly what the server sees when it is asked for that reply)."""
    end = len(messages) - 1 if messages and messages[-1]["role"] == "assistant" else len(messages)
    return "\n".join(m["content"] for m in messages[:end] if m["role"] == "user")


def render_system(system: str, entries: list[Entry]) -> str:
    """The system prompt with the entries after it, in the one fixed format."""
    if not entries:
        return system
    return f"{system.rstrip()}\n\n{HEADER}\n" + "\n".join(e.rendered() for e in entries)


def with_system(messages: list[dict], system: str) -> list[dict]:
    """The conversation with its system message set to `system` (added first when it has none)."""
    rest = [m for m in messages if m["role"] != "system"]
    return [{"role": "system", "content": system}, *rest]


def ground(messages: list[dict], retriever: Retriever, system: str | None = None,
           entries: list[Entry] | None = None) -> tuple[list[dict], list[Entry]]:
    """The conversation with the top-k entries rendered into its system prompt, and those entries.
    `system`: the base system prompt (default: the conversation's own); `entries`: already retrieved."""
    if system is None:
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
    if entries is None:
        entries = retriever.search(retrieval_query(messages))
    return with_system(messages, render_system(system, entries)), entries


def manifest_section(kb: KnowledgeBase, k: int) -> dict:
    """What an adapter's manifest records about grounded training (`knowledge` key)."""
    return {"fingerprint": kb.fingerprint, "k": k, "entries": len(kb.entries), "source": kb.source,
            "format": "system prompt + blank line + 'Knowledge base:' + one '[id] title: text' line per entry"}
