"""GGUF files shipped in PyPI packages: check a file's header and sha256, and convert it to a safetensors directory.

transformers loads a GGUF with `gguf_file=` (dequantized, ~40-60 s); the kit converts it once into a safetensors
directory in its cache and serves that (~4 s to load). Used for the embedded default model and the opt-in judges.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterable

Progress = Callable[[str], None]


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_header(path: Path) -> dict:
    """The header fields that identify a GGUF model: name, architecture, file type and tensor count."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(key: str):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    return {"name": field("general.name"), "architecture": field("general.architecture"),
            "file_type": field("general.file_type"), "tensor_count": len(reader.tensors)}


def convert_gguf(gguf: Path, stage: Path, *, served_name: str, chat_template: str | None = None,
                 extra_eos_tokens: Iterable[str] = (), progress: Progress = print) -> None:
    """Dequantize `gguf` to bfloat16 and save model + tokenizer as a safetensors directory at `stage`.

    `chat_template` replaces the GGUF's own (None keeps it); `extra_eos_tokens` also end a turn.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    progress("reading the tokenizer from the GGUF (~15 s)")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    progress("dequantizing the weights to bfloat16 (~30-90 s)")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # else save_pretrained refuses
    progress("saving the safetensors directory")
    if chat_template is not None:
        tok.chat_template = chat_template
    eos = [tok.eos_token_id] + [tok.convert_tokens_to_ids(t) for t in extra_eos_tokens]
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
        eos_token_id=list(dict.fromkeys(e for e in eos if e is not None)),
    )
    model.config.name_or_path = served_name
    model.save_pretrained(stage)
    tok.save_pretrained(stage)
