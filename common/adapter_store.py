"""The adapter store: a directory of adapter directories, one per name. Training writes it; serving and eval read it.

The rule that keeps readers from ever seeing half an adapter: a writer builds the adapter in a hidden (dot)
directory inside the store (the same filesystem, so the final rename is atomic) and renames it into place once
complete; readers skip dot-directories. What each adapter is, is its manifest (common.manifest).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

from common.manifest import MANIFEST_FILE, AdapterManifest, read_manifest

# A store directory name: also the adapter's name in the API (OpenAI `model`, TGI `adapter_id`).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name)) and ".." not in name


def staging_dir(store: Path, name: str) -> Path:
    """A new hidden directory inside the store to build `name` in (readers skip it)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    return store / f".staging-{name}-{uuid.uuid4().hex[:8]}"


def publish(stage: Path, store: Path, name: str) -> Path:
    """Rename the finished directory into place; an older adapter of the same name is moved aside, then deleted."""
    target = Path(store) / name
    old = None
    if target.exists():
        old = Path(store) / f".replaced-{name}-{int(time.time())}"
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def adapter_dirs(store: Path) -> list[Path]:
    """The published adapter directories, by name (nothing when the store does not exist)."""
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_published(store: Path, name: str) -> bool:
    """Whether `name` is in the store with a manifest: the kit's training publishes nothing without one."""
    return (Path(store) / name / MANIFEST_FILE).is_file()


def read_manifests(store: Path) -> dict[str, AdapterManifest]:
    """{name: manifest} of every published adapter with a valid manifest; others are left out."""
    found = {}
    for adapter_dir in adapter_dirs(store):
        try:
            manifest = read_manifest(adapter_dir)
        except ValueError:
            continue
        if manifest is not None:
            found[adapter_dir.name] = manifest
    return found
